// Command plain is a host stand-in for a Gozen image in elftrim's tests:
// it links boot's image-trim record and, through crypto/rand, Go's FIPS
// entropy buffer.
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
