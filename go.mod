module github.com/gozen-dev/gozen

go 1.26.0

require (
	github.com/diskfs/go-diskfs v1.9.4
	github.com/usbarmory/tamago v1.26.0
	golang.org/x/net v0.62.0
	golang.org/x/sys v0.49.0
)

require (
	github.com/elliotwutingfeng/asciiset v0.0.0-20260129054604-cfde2086bc57 // indirect
	github.com/google/uuid v1.6.0 // indirect
)

tool github.com/usbarmory/tamago/cmd/tamago
