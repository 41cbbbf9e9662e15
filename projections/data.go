package projections

import (
	"time"

	"github.com/google/uuid"

	"evident/domain/session"
	"evident/domain/user"
)

// decodeUser decodes the data of a user.* event as user.Decode does. The
// data Evident writes is read by readUser, without json.Unmarshal's decoder
// state and without decoding into a pointer first (a replay decodes every
// event); anything else goes to user.Decode, so the result and the errors
// are its own.
func decodeUser(typ string, schema int, data []byte) (user.Event, error) {
	if schema <= user.SchemaVersion {
		if e, ok := readUser(typ, data); ok {
			return e, nil
		}
	}
	return user.Decode(typ, schema, data)
}

// decodeSession is decodeUser for auth.* events (session.Decode).
func decodeSession(typ string, schema int, data []byte) (session.Event, error) {
	if schema <= session.SchemaVersion {
		if e, ok := readSession(typ, data); ok {
			return e, nil
		}
	}
	return session.Decode(typ, schema, data)
}

// readUser reads data when it is a plain JSON object (see plainScanner) of
// typ's fields, and returns false otherwise.
func readUser(typ string, data []byte) (user.Event, bool) {
	o := object{sc: plainScanner{b: data}}
	switch typ {
	case user.TypeCreated:
		var e user.Created
		for o.next() {
			switch string(o.key) {
			case "user_id":
				o.uuid(&e.UserID)
			case "email":
				o.str(&e.Email)
			case "name":
				o.str(&e.Name)
			case "roles":
				o.strs(&e.Roles)
			case "credential_id":
				o.uuidPtr(&e.CredentialID)
			default:
				o.bad = true
			}
		}
		return e, o.ok()
	case user.TypeUpdated:
		var e user.Updated
		for o.next() {
			switch string(o.key) {
			case "user_id":
				o.uuid(&e.UserID)
			case "email":
				o.strPtr(&e.Email)
			case "name":
				o.strPtr(&e.Name)
			case "roles":
				o.strs(&e.Roles)
			case "credential_id":
				o.uuidPtr(&e.CredentialID)
			case "updated_by":
				o.str(&e.UpdatedBy)
			default:
				o.bad = true
			}
		}
		return e, o.ok()
	case user.TypeActivationRequested:
		var e user.ActivationRequested
		for o.next() {
			switch string(o.key) {
			case "user_id":
				o.uuid(&e.UserID)
			case "token_hash":
				o.str(&e.TokenHash)
			case "expires_at":
				o.time(&e.ExpiresAt)
			case "requested_by":
				o.str(&e.RequestedBy)
			default:
				o.bad = true
			}
		}
		return e, o.ok()
	case user.TypeActivated:
		var e user.Activated
		for o.next() {
			switch string(o.key) {
			case "user_id":
				o.uuid(&e.UserID)
			case "activated_by":
				o.str(&e.ActivatedBy)
			case "method":
				o.str(&e.Method)
			case "token_hash":
				o.str(&e.TokenHash)
			case "credential_id":
				o.uuidPtr(&e.CredentialID)
			default:
				o.bad = true
			}
		}
		return e, o.ok()
	case user.TypeDeactivated:
		var e user.Deactivated
		for o.next() {
			switch string(o.key) {
			case "user_id":
				o.uuid(&e.UserID)
			case "deactivated_by":
				o.str(&e.DeactivatedBy)
			case "reason":
				o.str(&e.Reason)
			default:
				o.bad = true
			}
		}
		return e, o.ok()
	case user.TypeStatusChanged:
		var (
			e        user.StatusChanged
			from, to string
		)
		for o.next() {
			switch string(o.key) {
			case "user_id":
				o.uuid(&e.UserID)
			case "from":
				o.str(&from)
			case "to":
				o.str(&to)
			case "reason":
				o.str(&e.Reason)
			case "changed_by":
				o.str(&e.ChangedBy)
			default:
				o.bad = true
			}
		}
		e.From, e.To = user.Status(from), user.Status(to)
		return e, o.ok()
	case user.TypeActivationTokenExpired:
		var e user.ActivationTokenExpired
		for o.next() {
			switch string(o.key) {
			case "user_id":
				o.uuid(&e.UserID)
			case "token_hash":
				o.str(&e.TokenHash)
			case "expired_at":
				o.time(&e.ExpiredAt)
			default:
				o.bad = true
			}
		}
		return e, o.ok()
	case user.TypeDeleted:
		var e user.Deleted
		for o.next() {
			switch string(o.key) {
			case "user_id":
				o.uuid(&e.UserID)
			case "deleted_by":
				o.str(&e.DeletedBy)
			case "reason":
				o.str(&e.Reason)
			default:
				o.bad = true
			}
		}
		return e, o.ok()
	}
	return nil, false
}

// readSession is readUser for auth.* events.
func readSession(typ string, data []byte) (session.Event, bool) {
	o := object{sc: plainScanner{b: data}}
	switch typ {
	case session.TypeLoggedIn:
		var e session.LoggedIn
		for o.next() {
			switch string(o.key) {
			case "session_id":
				o.uuid(&e.SessionID)
			case "user_id":
				o.uuid(&e.UserID)
			case "token_hash":
				o.str(&e.TokenHash)
			case "expires_at":
				o.time(&e.ExpiresAt)
			default:
				o.bad = true
			}
		}
		return e, o.ok()
	case session.TypeLoggedOut:
		var e session.LoggedOut
		for o.next() {
			switch string(o.key) {
			case "session_id":
				o.uuid(&e.SessionID)
			case "user_id":
				o.uuid(&e.UserID)
			default:
				o.bad = true
			}
		}
		return e, o.ok()
	case session.TypeExpired:
		var e session.Expired
		for o.next() {
			switch string(o.key) {
			case "session_id":
				o.uuid(&e.SessionID)
			case "user_id":
				o.uuid(&e.UserID)
			case "expired_at":
				o.time(&e.ExpiredAt)
			default:
				o.bad = true
			}
		}
		return e, o.ok()
	case session.TypeRevoked:
		var e session.Revoked
		for o.next() {
			switch string(o.key) {
			case "session_id":
				o.uuid(&e.SessionID)
			case "user_id":
				o.uuid(&e.UserID)
			case "reason":
				o.str(&e.Reason)
			case "revoked_by":
				o.str(&e.RevokedBy)
			default:
				o.bad = true
			}
		}
		return e, o.ok()
	}
	return nil, false
}

// null skips white space and then null, if it is there.
func (s *plainScanner) null() bool {
	s.space()
	if len(s.b)-s.i >= 4 && string(s.b[s.i:s.i+4]) == "null" {
		s.i += 4
		return true
	}
	return false
}

// object walks the members of a plain JSON object: next reads a key, then
// one of the value methods its value. A value or member that is not plain
// sets bad, which ends the walk.
type object struct {
	sc      plainScanner
	key     []byte
	started bool
	bad     bool
}

func (o *object) next() bool {
	if o.bad {
		return false
	}
	if !o.started {
		o.started = true
		if !o.sc.byte('{') {
			o.bad = true
			return false
		}
		if o.sc.byte('}') {
			return false
		}
	} else if !o.sc.byte(',') {
		if !o.sc.byte('}') {
			o.bad = true
		}
		return false
	}
	var ok bool
	if o.key, ok = o.sc.str(); !ok || !o.sc.byte(':') {
		o.bad = true
		return false
	}
	return true
}

// ok reports whether the object was plain and nothing follows it.
func (o *object) ok() bool { return o.started && !o.bad && o.sc.end() }

func (o *object) str(dst *string) {
	v, ok := o.sc.str()
	if !ok {
		o.bad = true
		return
	}
	*dst = string(v)
}

func (o *object) strPtr(dst **string) {
	if o.sc.null() {
		*dst = nil
		return
	}
	var s string
	if o.str(&s); !o.bad {
		*dst = &s
	}
}

func (o *object) uuid(dst *uuid.UUID) {
	v, ok := o.sc.str()
	if !ok || dst.UnmarshalText(v) != nil {
		o.bad = true
	}
}

func (o *object) uuidPtr(dst **uuid.UUID) {
	if o.sc.null() {
		*dst = nil
		return
	}
	var id uuid.UUID
	if o.uuid(&id); !o.bad {
		*dst = &id
	}
}

func (o *object) time(dst *time.Time) {
	v, ok := o.sc.quoted()
	if !ok || dst.UnmarshalJSON(v) != nil {
		o.bad = true
	}
}

// strs reads an array of plain strings (an empty one as an empty slice,
// not nil, as json.Unmarshal does), or null.
func (o *object) strs(dst *[]string) {
	if o.sc.null() {
		*dst = nil
		return
	}
	if !o.sc.byte('[') {
		o.bad = true
		return
	}
	out := []string{}
	if !o.sc.byte(']') {
		for {
			v, ok := o.sc.str()
			if !ok {
				o.bad = true
				return
			}
			out = append(out, string(v))
			if o.sc.byte(',') {
				continue
			}
			if !o.sc.byte(']') {
				o.bad = true
				return
			}
			break
		}
	}
	*dst = out
}
