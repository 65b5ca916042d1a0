package wsconn

// Queued is the number of frames waiting to be written: a sender of many
// frames of its own (a history replay) keeps it under the queue's limit.
func (c *Conn) Queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

// MaxQueue is the queue's limit: at it, the next frame closes with
// CloseSlowConsumer.
func (c *Conn) MaxQueue() int { return c.maxQueue }
