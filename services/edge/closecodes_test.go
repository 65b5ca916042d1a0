package edge_test

import (
	"slices"
	"testing"

	"github.com/wsgate/wsgate/api/wire"
	jsclient "github.com/wsgate/wsgate/clients/js"
)

// TestFinalCloseCodes_JSClientAgrees ties the JS client's list of close
// codes that stop reconnection to api/wire's, the one source of DESIGN §2's
// codes: a code added to one and not the other fails here.
func TestFinalCloseCodes_JSClientAgrees(t *testing.T) {
	js, want := jsclient.FinalCloseCodes(), wire.FinalCloseCodes()
	slices.Sort(js)
	slices.Sort(want)
	if !slices.Equal(js, want) {
		t.Fatalf("JS client FINAL_CLOSE_CODES %v, api/wire FinalCloseCodes %v", js, want)
	}
}
