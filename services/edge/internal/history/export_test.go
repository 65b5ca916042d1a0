package history

// SetBeforeRead makes f run as each replay of h starts reading, after it
// read the stream's state: a test drops messages there.
func SetBeforeRead(h *History, f func()) { h.beforeRead = f }
