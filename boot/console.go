package boot

// maxInputLine bounds a line being edited; further bytes are dropped
// until Enter.
const maxInputLine = 4095

// lineDisc is the console input's line discipline, a terminal's cooked
// mode in small: printable bytes are echoed and collected, CR, LF or CR LF
// ends the line (delivered with one '\n'), backspace or DEL erases the
// last byte (echoing "\b \b"). Other control bytes are kept but not
// echoed.
type lineDisc struct {
	line   []byte
	lastCR bool
}

// feed processes input, calling echo for bytes to show and deliver for
// each finished line; it reports whether something was echoed after the
// last line end (so the caller flushes the echo). deliver must not keep
// the slice.
func (d *lineDisc) feed(b []byte, echo func(byte), deliver func([]byte)) (pending bool) {
	for _, c := range b {
		switch {
		case c == '\n' && d.lastCR:
			// the LF of a CR LF pair
		case c == '\r' || c == '\n':
			d.line = append(d.line, '\n')
			echo('\n')
			deliver(d.line)
			d.line = d.line[:0]
			pending = false
		case c == 0x7f || c == '\b':
			if len(d.line) > 0 {
				d.line = d.line[:len(d.line)-1]
				echo('\b')
				echo(' ')
				echo('\b')
				pending = true
			}
		case len(d.line) < maxInputLine:
			d.line = append(d.line, c)
			if c >= ' ' || c == '\t' {
				echo(c)
				pending = true
			}
		}
		d.lastCR = c == '\r'
	}
	return pending
}

// reset forgets the line being edited (on switching to raw mode).
func (d *lineDisc) reset() { d.line, d.lastCR = d.line[:0], false }
