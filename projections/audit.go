package projections

import (
	"evident/domain/session"
	"evident/domain/user"
	"evident/eventstore"
	"evident/readmodels"

	"github.com/google/uuid"
)

// Actions of the audit trail per event type (DESIGN §2).
var actions = map[string]string{
	user.TypeCreated:                "user_created",
	user.TypeUpdated:                "user_updated",
	user.TypeActivationRequested:    "user_activation_requested",
	user.TypeActivated:              "user_activated",
	user.TypeDeactivated:            "user_deactivated",
	user.TypeStatusChanged:          "user_status_changed",
	user.TypeActivationTokenExpired: "activation_token_expired",
	user.TypeDeleted:                "user_deleted",
	session.TypeLoggedIn:            "user_logged_in",
	session.TypeLoggedOut:           "user_logged_out",
	session.TypeExpired:             "session_expired",
	session.TypeRevoked:             "session_revoked",
}

// Action returns the audit action of an event type, or "" when the type is
// not audited.
func Action(eventType string) string { return actions[eventType] }

// IsAction reports whether a is the audit action of some event type.
func IsAction(a string) bool {
	for _, v := range actions {
		if v == a {
			return true
		}
	}
	return false
}

type auditProjection struct{}

// Audit writes one audit row per user.* and auth.* event: the event's data
// as details, its metadata, actor and occurred_at, and its position. The
// email.* claim events are skipped: they are an internal guard of e-mail
// uniqueness, appended with the user event that already tells the story.
//
// The aggregate (and resource) id is taken from the event's own data
// (user_id, or session_id for auth.*), which is the id in its stream's name;
// stream names are not parsed.
func Audit() Projection { return auditProjection{} }

func (auditProjection) Name() string     { return NameAudit }
func (auditProjection) Tables() []string { return []string{"audit"} }

func (p auditProjection) Apply(tx *readmodels.Tx, ev eventstore.RecordedEvent) error {
	if !p.handles(ev.Type) {
		return nil
	}
	d := decode(&ev)
	if d.err != nil {
		return d.err
	}
	return tx.InsertAudit(auditRecord(&d))
}

// auditRecord is the audit row of an audited event.
func auditRecord(d *event) readmodels.AuditRecord {
	var (
		aggType    string
		aggID, uid uuid.UUID
	)
	if d.sess != nil {
		aggType = "session"
		aggID, uid = sessionIDs(d.sess)
	} else {
		aggType = "user"
		aggID = userID(d.user)
		uid = aggID
	}
	ev, agg := d.rec, aggID.String()
	return readmodels.AuditRecord{
		EventID:       ev.ID,
		EventType:     ev.Type,
		AggregateID:   agg,
		AggregateType: aggType,
		UserID:        &uid,
		ActorID:       d.md.actorID,
		Action:        actions[ev.Type],
		Resource:      aggType,
		ResourceID:    agg,
		Details:       ev.Data,
		OccurredAt:    d.at,
		Position:      ev.Position,
		Metadata:      ev.Metadata,
	}
}

func (auditProjection) folder() folder { return &auditFolder{} }

// auditFolder writes a batch's audit rows with one bulk insert.
type auditFolder struct{ out []readmodels.AuditRecord }

func (f *auditFolder) replay(b *readmodels.Bulk, evs []event) error {
	if cap(f.out) < len(evs) {
		f.out = make([]readmodels.AuditRecord, 0, len(evs)) // not grown by doubling
	}
	f.out = f.out[:0]
	for i := range evs {
		d := &evs[i]
		if _, ok := actions[d.rec.Type]; !ok {
			continue
		}
		if d.err != nil {
			return d.err
		}
		f.out = append(f.out, auditRecord(d))
	}
	err := b.InsertAudit(f.out)
	clear(f.out) // let the events' data go
	return err
}

// sessionIDs returns the session and the user a session event is about.
func sessionIDs(e session.Event) (sessionID, userID uuid.UUID) {
	switch e := e.(type) {
	case session.LoggedIn:
		return e.SessionID, e.UserID
	case session.LoggedOut:
		return e.SessionID, e.UserID
	case session.Expired:
		return e.SessionID, e.UserID
	case session.Revoked:
		return e.SessionID, e.UserID
	}
	return uuid.Nil, uuid.Nil
}

func (auditProjection) handles(eventType string) bool {
	_, ok := actions[eventType]
	return ok
}
