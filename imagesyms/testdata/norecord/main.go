// Command norecord links boot's image-trim record, as every Gozen image
// does, but not its runtime-symbol record (nothing reads it, as in an
// image that never suspends): imagesyms has nothing to write.
package main

import (
	"fmt"

	"github.com/gozen-dev/gozen/boot"
)

func main() { fmt.Println(boot.Trimmed()) }
