package integration

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestWindowForgetsTheOldestBeyondItsSize(t *testing.T) {
	w := newWindow(3)
	for i := range 4 {
		w.add(fmt.Sprint(i))
	}
	w.add("3") // a repeat takes no slot
	assert.False(t, w.has("0"))
	for _, id := range []string{"1", "2", "3"} {
		assert.True(t, w.has(id), id)
	}
	assert.Len(t, w.ids, 3)
}
