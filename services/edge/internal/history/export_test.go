package history

// SetBeforeRead makes f run as each replay of h starts reading, after it
// read the stream's state: a test drops messages there.
func SetBeforeRead(h *History, f func()) { h.beforeRead = f }

// SetWindowAtOnce makes every replay of h from n at once use its window
// (Config.Window): a test of the window need not make a storm.
func SetWindowAtOnce(h *History, n int64) { h.atOnce = n }

var HoldsAll = holdsAll
