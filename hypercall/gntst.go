package hypercall

import "fmt"

// GrantStatus is a grant-table operation's per-entry status (GNTST_* in
// grant_table.h); zero is success, negative values are errors.
type GrantStatus int16

// Grant statuses.
const (
	GNTSTOkay             GrantStatus = 0
	GNTSTGeneralError     GrantStatus = -1
	GNTSTBadDomain        GrantStatus = -2
	GNTSTBadGntref        GrantStatus = -3
	GNTSTBadHandle        GrantStatus = -4
	GNTSTBadVirtAddr      GrantStatus = -5
	GNTSTBadDevAddr       GrantStatus = -6
	GNTSTNoDeviceSpace    GrantStatus = -7
	GNTSTPermissionDenied GrantStatus = -8
	GNTSTBadPage          GrantStatus = -9
	GNTSTBadCopyArg       GrantStatus = -10
	GNTSTAddressTooBig    GrantStatus = -11
	GNTSTEagain           GrantStatus = -12
	GNTSTNoSpace          GrantStatus = -13
)

var gntstNames = map[GrantStatus]string{
	GNTSTOkay: "GNTST_okay", GNTSTGeneralError: "GNTST_general_error",
	GNTSTBadDomain: "GNTST_bad_domain", GNTSTBadGntref: "GNTST_bad_gntref",
	GNTSTBadHandle: "GNTST_bad_handle", GNTSTBadVirtAddr: "GNTST_bad_virt_addr",
	GNTSTBadDevAddr: "GNTST_bad_dev_addr", GNTSTNoDeviceSpace: "GNTST_no_device_space",
	GNTSTPermissionDenied: "GNTST_permission_denied", GNTSTBadPage: "GNTST_bad_page",
	GNTSTBadCopyArg: "GNTST_bad_copy_arg", GNTSTAddressTooBig: "GNTST_address_too_big",
	GNTSTEagain: "GNTST_eagain", GNTSTNoSpace: "GNTST_no_space",
}

// Error names the status, e.g. "GNTST_bad_gntref".
func (s GrantStatus) Error() string {
	if n, ok := gntstNames[s]; ok {
		return n
	}
	return fmt.Sprintf("GNTST %d", int16(s))
}
