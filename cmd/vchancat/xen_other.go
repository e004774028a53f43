//go:build !linux

package main

import (
	"context"
	"errors"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/vchan"
)

// xenServices is only on Linux: -xen needs the kernel's /dev/xen devices.
func xenServices(context.Context) (vchan.Config, domid.ID, func(), error) {
	return vchan.Config{}, 0, nil, errors.New("-xen needs a Linux domain's /dev/xen devices")
}
