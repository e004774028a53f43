//go:build tamago

package gntxen

import (
	"fmt"
	"sync"

	"github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/domid"
)

// HoleLimit bounds the hole: it stays in the write-back part of the low
// 4 GiB and clear of the 32-bit PCI/MMIO area.
const HoleLimit = 0xc0000000

var (
	defaultOnce sync.Once
	defaultGnt  *Grants
	defaultErr  error
	defaultBase uint64
)

// Default returns the domain's grant service, setting it up on first use
// in the hole ChooseHole finds above the memory map.
func Default() (*Grants, error) {
	defaultOnce.Do(func() {
		var regions []Region
		for _, r := range boot.Start.Memmap {
			regions = append(regions, Region{Addr: r.Addr, Size: r.Size})
		}
		defaultBase, defaultErr = ChooseHole(regions, HoleSize, HoleLimit)
		if defaultErr != nil {
			defaultErr = fmt.Errorf("gntxen: %w", defaultErr)
			return
		}
		defaultGnt, defaultErr = New(defaultBase)
		if defaultErr == nil {
			if id, ok := boot.DomID(); ok {
				defaultGnt.SetSelf(domid.ID(id))
			}
		}
	})
	return defaultGnt, defaultErr
}

// HoleBase returns where Default put the grant frames and map window.
func HoleBase() uint64 { return defaultBase }
