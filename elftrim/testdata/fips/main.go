//go:debug fips140=on

// Command fips is plain built with FIPS 140-3 mode on, which elftrim must
// refuse to trim.
package main

import (
	"crypto/rand"
	"fmt"

	"github.com/gozen-dev/gozen/boot"
)

func main() {
	_, trimmed := boot.Trimmed()
	fmt.Println(rand.Text(), trimmed)
}
