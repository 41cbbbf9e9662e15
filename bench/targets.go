package main

func newStreamTarget(backend string, writers int) target {
	switch {
	case backend == "SQLite" && writers == 8:
		return target{Text: "≥ 2× hallgren, no SQLITE_BUSY", MinPeer: 2, NoBusy: true}
	case backend == "SQLite":
		return target{Text: "no SQLITE_BUSY", NoBusy: true}
	case writers >= 32:
		return target{Text: "≥ 2× raw INSERT, ≥ 1.5× peer", MinRaw: 2, MinPeer: 1.5}
	case writers >= 8:
		return target{Text: "≥ 1× raw INSERT, ≥ 1.5× peer", MinRaw: 1, MinPeer: 1.5}
	}
	return target{}
}

func zipfTarget(backend string, writers int) target {
	switch {
	case backend == "SQLite" && writers == 8:
		return target{Text: "≥ 2× hallgren, no SQLITE_BUSY", MinPeer: 2, NoBusy: true}
	case backend == "SQLite":
		return target{Text: "no SQLITE_BUSY", NoBusy: true}
	case writers >= 8:
		return target{Text: "≥ 1× raw read+INSERT, ≥ 1.5× peer", MinRaw: 1, MinPeer: 1.5}
	}
	return target{}
}

func hotTarget() target {
	return target{Text: "zero duplicate versions, no SQLITE_BUSY", NoDups: true, NoBusy: true}
}
