// Command other is not a Gozen program: it links neither of boot's
// records, and imagesyms must refuse it.
package main

import "fmt"

func main() { fmt.Println("not a Gozen image") }
