//go:build tamago

#include "textflag.h"

// func intBeforeHLT()
//
// Takes the retry vector (0xf4, platform.RetryVector) by INT, whose frame
// holds the address of the HLT after it: to the entry slot it looks like
// an interrupt that arrived just before an idle HLT could run. The slot
// must return past the HLT; if it did not, the HLT would sleep until the
// next interrupt. The caller's interrupt flag is restored.
TEXT ·intBeforeHLT(SB),NOSPLIT,$0
	PUSHFQ
	STI
	INT	$0xf4
	HLT
	POPFQ
	RET
