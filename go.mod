module github.com/gozen-dev/gozen

go 1.26.0

require (
	github.com/usbarmory/tamago v1.26.0
	golang.org/x/net v0.62.0
	golang.org/x/sys v0.49.0
)

tool github.com/usbarmory/tamago/cmd/tamago
