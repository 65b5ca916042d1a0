package proto

import (
	"math/rand/v2"
	"strconv"
)

// AppendTextPayload appends a payload like AppendPayload's (ts and seq
// first, at least size bytes) whose filler is what applications send: a
// feed of items, each with an id, an author, a title, a text of words, tags
// and counts, their values drawn from seq. JSON of that kind shrinks under
// permessage-deflate as real messages do (its keys repeat, its words come
// from a language), where AppendPayload's run of one letter shrinks to
// almost nothing. The last item is cut to a text that ends the payload at
// exactly size bytes when size leaves room for it.
func AppendTextPayload(dst []byte, ts int64, seq uint64, size int) []byte {
	start := len(dst)
	rng := rand.New(rand.NewPCG(seq, 0x9e3779b97f4a7c15))
	dst = append(dst, `{"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"items":[`...)
	const itemMax = 320 // more than an item's longest encoding below
	for n := 0; size-(len(dst)-start) > itemMax; n++ {
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = appendItem(dst, rng)
	}
	dst = append(dst, `],"text":"`...)
	for n, first := size-2-(len(dst)-start), true; n > 0; n, first = size-2-(len(dst)-start), false {
		if !first && n > 1 {
			dst = append(dst, ' ')
			n--
		}
		w := words[rng.IntN(len(words))]
		dst = append(dst, w[:min(len(w), n)]...)
	}
	return append(dst, `"}`...)
}

func appendItem(dst []byte, rng *rand.Rand) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, 100000+rng.Uint64N(900000), 10)
	dst = append(dst, `,"author":{"id":`...)
	dst = strconv.AppendUint(dst, rng.Uint64N(50000), 10)
	dst = append(dst, `,"name":"`...)
	dst = append(dst, names[rng.IntN(len(names))]...)
	dst = append(dst, `"},"title":"`...)
	dst = appendWords(dst, rng, 3+rng.IntN(4))
	dst = append(dst, `","body":"`...)
	dst = appendWords(dst, rng, 6+rng.IntN(6))
	dst = append(dst, `","tags":["`...)
	dst = append(dst, words[rng.IntN(len(words))]...)
	dst = append(dst, `","`...)
	dst = append(dst, words[rng.IntN(len(words))]...)
	dst = append(dst, `"],"likes":`...)
	dst = strconv.AppendUint(dst, rng.Uint64N(5000), 10)
	dst = append(dst, `,"read":`...)
	dst = strconv.AppendBool(dst, rng.IntN(2) == 0)
	return append(dst, '}')
}

func appendWords(dst []byte, rng *rand.Rand, n int) []byte {
	for i := range n {
		if i > 0 {
			dst = append(dst, ' ')
		}
		dst = append(dst, words[rng.IntN(len(words))]...)
	}
	return dst
}

var names = []string{"Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov",
	"Donald Knuth", "Frances Allen", "Ken Thompson", "Margaret Hamilton", "Niklaus Wirth",
	"Radia Perlman", "Tony Hoare", "Leslie Lamport", "Shafi Goldwasser", "John Backus", "Hedy Lamarr"}

var words = []string{"the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on",
	"are", "as", "with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by",
	"word", "but", "not", "what", "all", "were", "we", "when", "your", "can", "said", "there", "use",
	"an", "each", "which", "she", "do", "how", "their", "if", "will", "up", "other", "about", "out",
	"many", "then", "them", "these", "so", "some", "her", "would", "make", "like", "him", "into",
	"time", "has", "look", "two", "more", "write", "go", "see", "number", "no", "way", "could",
	"people", "my", "than", "first", "water", "been", "call", "who", "oil", "its", "now", "find",
	"long", "down", "day", "did", "get", "come", "made", "may", "part", "order", "release", "server",
	"update", "price", "market", "weather", "football", "meeting", "project", "deadline", "invoice",
	"delivery", "message", "account", "payment", "shipping", "review", "comment", "photo", "video",
	"launch", "report", "budget", "quarter", "customer", "support", "ticket", "status", "online",
	"offline", "mobile", "browser", "network", "storage", "cluster", "region", "latency", "window",
	"Monday", "Tuesday", "Friday", "morning", "evening", "tomorrow", "yesterday", "Paris", "Berlin",
	"Tokyo", "London", "Madrid", "Lisbon", "coffee", "garden", "kitchen", "station", "airport"}
