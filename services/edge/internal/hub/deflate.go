package hub

// counted records how many times the delivery's message was compressed:
// once at most, whatever the number of compressing recipients.
func (d *delivery) counted() { d.s.Deflated.Add(uint64(d.out.Deflates())) }
