package hub

// counted records that the delivery's message was compressed, once.
func (d *delivery) counted() {
	if d.out.Deflated() {
		d.s.Deflated.Add(1)
	}
}
