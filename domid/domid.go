// Package domid holds the Xen domain id type and the reserved ids of
// xen.h (DOMID_SELF and its neighbours), shared by every package that
// names a domain: event channels, grant tables, xenstore, vchan and V4V.
package domid

// ID identifies a domain: a Xen domid, or a peer id of a host transport.
type ID uint16

// Reserved ids (DOMID_* in xen/include/public/xen.h). Real domains are
// numbered below FirstReserved.
const (
	// FirstReserved is DOMID_FIRST_RESERVED: ids from here on are not
	// domains.
	FirstReserved ID = 0x7ff0
	// Self is DOMID_SELF: the calling domain.
	Self ID = 0x7ff0
	// IO is DOMID_IO.
	IO ID = 0x7ff1
	// Xen is DOMID_XEN: the hypervisor itself.
	Xen ID = 0x7ff2
	// COW is DOMID_COW.
	COW ID = 0x7ff3
	// Invalid is DOMID_INVALID. Argo uses it as XEN_ARGO_DOMID_ANY: a
	// ring partner that lets every domain send, or "this domain" as a
	// source; see Any.
	Invalid ID = 0x7ff4
	// Any is XEN_ARGO_DOMID_ANY, the same value as Invalid.
	Any ID = Invalid
	// Idle is DOMID_IDLE.
	Idle ID = 0x7fff
)

// Reserved reports whether id is one of the reserved ids rather than a
// domain.
func (id ID) Reserved() bool { return id >= FirstReserved }
