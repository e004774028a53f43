module github.com/gozen-dev/gozen

go 1.26.0

require (
	github.com/diskfs/go-diskfs v1.9.4
	github.com/usbarmory/tamago v1.26.0
	golang.org/x/net v0.62.0
	golang.org/x/sys v0.49.0
)

require libvirt.org/go/libvirtxml v1.12008.0

require (
	github.com/elliotwutingfeng/asciiset v0.0.0-20260129054604-cfde2086bc57 // indirect
	github.com/google/btree v1.1.2 // indirect
	github.com/google/uuid v1.6.0 // indirect
	golang.org/x/time v0.7.0 // indirect
	gvisor.dev/gvisor v0.0.0-20250911055229-61a46406f068
)

tool github.com/usbarmory/tamago/cmd/tamago
