module github.com/gozen-dev/gozen

go 1.26.0

require (
	github.com/usbarmory/tamago v1.26.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

tool github.com/usbarmory/tamago/cmd/tamago
