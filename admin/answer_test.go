package admin

import (
	"math"
	"net/http/httptest"
	"reflect"
	"strconv"
	"testing"
)

// writeCounter must answer what WriteJSON answers for the same value: status, headers and
// body, byte for byte.
func TestWriteCounter_SameAsWriteJSON(t *testing.T) {
	for _, v := range []int64{0, 1, -1, 9, 10, 99, 100, 12345, -12345, math.MaxInt64, math.MinInt64, math.MaxInt64 - 1, math.MinInt64 + 1} {
		t.Run(strconv.FormatInt(v, 10), func(t *testing.T) {
			want := httptest.NewRecorder()
			WriteJSON(want, 200, valueAnswer[int64]{v})
			got := httptest.NewRecorder()
			writeCounter(got, v)
			if got, want := got.Code, want.Code; got != want {
				t.Errorf("status %d, want %d", got, want)
			}
			if got, want := got.Body.String(), want.Body.String(); got != want {
				t.Errorf("body %q, want %q", got, want)
			}
			if got, want := got.Header(), want.Header(); !reflect.DeepEqual(got, want) {
				t.Errorf("header %v, want %v", got, want)
			}
		})
	}
}
