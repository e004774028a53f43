package rig

import "syscall"

// qemuProcAttr makes QEMU die with the process that started it.
func qemuProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
