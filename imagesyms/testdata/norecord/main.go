// Command norecord imports boot without reading its runtime-symbol
// record, so the linker leaves the record out: imagesyms must refuse it.
package main

import (
	"fmt"

	"github.com/gozen-dev/gozen/boot"
)

func main() { fmt.Println(boot.Floor(1 << 20)) }
