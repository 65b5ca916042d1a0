package wsconn

// Batch is the right to write, held as a type.
//
// A connection has one writer at a time. Whoever queues a frame (Queue,
// Ping) while nobody is writing takes over the writing of that connection,
// and must write soon: frames queued by others meanwhile wait for it. Queue
// and Ping do not hand that right back to the caller to remember; they add
// the connection to the caller's Batch, and the batch's owner discharges
// every right it holds with Flush. Send, Pong and Close write at once
// themselves. A Batch belongs to one goroutine; Cut moves a share into a
// batch of its own for another goroutine, which then owns it and must Flush
// it. A batch is never dropped unflushed: a connection in it would keep
// the right to write that nobody uses, its frames unwritten and its close
// lingering for the whole grace.
type Batch struct {
	conns []*Conn
}

// Len is the number of connections whose writing the batch holds.
func (b *Batch) Len() int { return len(b.conns) }

// Flush writes the queue of every connection in the batch, none of which
// blocks (a socket that is full gets a writer goroutine of its own), and
// empties the batch, keeping its array for the next use.
func (b *Batch) Flush() {
	for _, c := range b.conns {
		c.flush()
	}
	clear(b.conns)
	b.conns = b.conns[:0]
}

// Cut moves the last n connections of b (all when n is larger) into a new
// batch with an array of its own, to be flushed by another goroutine.
func (b *Batch) Cut(n int) Batch {
	n = min(n, len(b.conns))
	rest := len(b.conns) - n
	share := Batch{conns: append([]*Conn(nil), b.conns[rest:]...)}
	clear(b.conns[rest:])
	b.conns = b.conns[:rest]
	return share
}

// hold adds c, whose writing the caller has just taken over.
func (b *Batch) hold(c *Conn) { b.conns = append(b.conns, c) }
