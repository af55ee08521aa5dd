package metadb

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The audit actions: a fixed dotted name for every state-changing call and
// every automatic decision that the audit stream records.
const (
	AuditTenantSignup    = "tenant.signup"
	AuditDBCreate        = "db.create"
	AuditDBResize        = "db.resize"
	AuditDBDrop          = "db.drop"
	AuditDBMode          = "db.mode"
	AuditPairAdd         = "pair.add"
	AuditSpareAdd        = "spare.add"
	AuditTenantLimits    = "tenant.limits"
	AuditAdminAuthFailed = "auth.admin_failed"
	AuditQuotaBan        = "quota.ban"
	AuditQuotaUnban      = "quota.unban"
	AuditPairFailover    = "pair.failover"
	AuditSpareAttach     = "spare.attach"
	AuditDBAlerts        = "db.alerts"
	AuditPairDrain       = "pair.drain"
	AuditPoolRebalance   = "pool.rebalance"
	AuditDBImport        = "db.import"
	AuditDBImportCutover = "db.import_cutover"
	AuditDBImportCancel  = "db.import_cancel"
	AuditWritesDegraded  = "db.writes_degraded"  // the db's pair has no replica: writes acknowledged unconfirmed
	AuditWritesConfirmed = "db.writes_confirmed" // a replica again: confirmed writes are confirmed again
	AuditSparesEmpty     = "spares.empty"        // a pair needs a replica and the spare pool is empty
	AuditDBExport        = "db.export"
	AuditExportDelete    = "export.delete"
	AuditDBRestore       = "db.restore"
)

// AuditActions lists every action, for validating filters.
var AuditActions = []string{
	AuditTenantSignup, AuditDBCreate, AuditDBResize, AuditDBDrop, AuditDBMode, AuditPairAdd, AuditSpareAdd, AuditTenantLimits,
	AuditAdminAuthFailed, AuditQuotaBan, AuditQuotaUnban, AuditPairFailover, AuditSpareAttach, AuditDBAlerts,
	AuditPairDrain, AuditPoolRebalance, AuditDBImport, AuditDBImportCutover, AuditDBImportCancel,
	AuditWritesDegraded, AuditWritesConfirmed, AuditSparesEmpty,
	AuditDBExport, AuditExportDelete, AuditDBRestore,
}

// AuditOK is the result of an action that was carried out; a refused or
// failed one is "error: <message>" (AuditResult).
const AuditOK = "ok"

// AuditResult is AuditOK for a nil err and "error: <message>" otherwise.
func AuditResult(err error) string {
	if err == nil {
		return AuditOK
	}
	return "error: " + err.Error()
}

// AuditEntry is one record of the audit stream. It never holds a secret:
// callers put names, addresses and client-facing messages in it, never a
// token, password, hash or header.
type AuditEntry struct {
	// ID is the stream entry id ("<unix ms>-<seq>"), set by metadb; it is
	// also the pagination cursor.
	ID string `json:"id"`
	// Time is when metadb recorded the entry (RFC 3339, UTC), from the id.
	Time string `json:"time"`
	// Actor is who acted: "admin", "tenant:<name>", "master/<id>",
	// "keeper/<id>", or "anonymous".
	Actor string `json:"actor"`
	// Action is one of the Audit* names.
	Action string `json:"action"`
	// Target is what was acted on: "<tenant>/<index>", a pair id, an address.
	Target string `json:"target"`
	// Tenant is the tenant concerned, "" when none; tenants see only theirs.
	Tenant string `json:"tenant"`
	// Result is AuditOK or "error: <message>".
	Result string `json:"result"`
	// RequestID is the REST request's id, or the job id of an automatic
	// decision, or "".
	RequestID string `json:"request_id"`
}

// auditField bounds every stored field, so no caller can grow an entry
// without bound.
const auditField = 512

func clipAudit(s string) string {
	if len(s) > auditField {
		return s[:auditField]
	}
	return s
}

func (e *AuditEntry) values() []any {
	return []any{
		"actor", clipAudit(e.Actor), "action", clipAudit(e.Action), "target", clipAudit(e.Target),
		"tenant", clipAudit(e.Tenant), "result", clipAudit(e.Result), "request_id", clipAudit(e.RequestID),
	}
}

// queueAudit appends e to the audit stream in p (a MULTI/EXEC or a
// pipeline) and trims the stream by length and by age. Both trims are
// approximate (~): Redis drops whole stream nodes only, so the stream may
// briefly hold up to one node (stream-node-max-entries, 100 by default)
// more than the caps.
func (s *Store) queueAudit(ctx context.Context, p redis.Pipeliner, e *AuditEntry) {
	p.XAdd(ctx, &redis.XAddArgs{Stream: keyAudit, MaxLen: int64(s.cfg.AuditMaxLen), Approx: true, Values: e.values()})
	minID := time.Now().Add(-s.cfg.AuditMaxAge).UnixMilli()
	p.XTrimMinIDApprox(ctx, keyAudit, strconv.FormatInt(minID, 10), 0)
}

// Audit appends one entry to the audit stream, for actions whose change is
// not recorded by metadb in the same transaction (REST calls record their
// outcome once it is known). Any ID or Time in e is ignored.
func (s *Store) Audit(ctx context.Context, e AuditEntry) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		s.queueAudit(ctx, p, &e)
		return nil
	})
	if err != nil {
		return fmt.Errorf("audit %s: %w", e.Action, err)
	}
	return nil
}

// AuditQuery selects audit entries, newest first. Zero fields select all.
type AuditQuery struct {
	Tenant string
	Action string
	// Since keeps entries recorded at or after it.
	Since time.Time
	// Limit caps the entries returned; 0 means 100.
	Limit int
	// Cursor is the Next of a previous page: only entries older than it.
	Cursor string
}

// auditBatch is how many entries one XREVRANGE reads; auditScan how many a
// page looks at, at most, before it returns with a cursor: a filter that
// matches little cannot make one call walk the whole stream.
const (
	auditBatch = 500
	auditScan  = 10000
)

// AuditLog reads the entries q selects, newest first. next is the cursor of
// the following page, "" once the stream has no older entry; a page may
// hold fewer than Limit entries while next is not "" (the scan of one page
// is bounded). A malformed cursor is an error wrapping ErrBadState.
func (s *Store) AuditLog(ctx context.Context, q AuditQuery) (entries []AuditEntry, next string, err error) {
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	end := "+"
	if q.Cursor != "" {
		ms, seq, ok := parseStreamID(q.Cursor)
		if !ok {
			return nil, "", fmt.Errorf("audit cursor %q: %w", q.Cursor, ErrBadState)
		}
		if ms == 0 && seq == 0 {
			return []AuditEntry{}, "", nil // nothing is older than the first possible id (and Redis refuses "(0-0")
		}
		end = "(" + strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq, 10)
	}
	start := "-"
	if !q.Since.IsZero() {
		start = strconv.FormatInt(max(q.Since.UnixMilli(), 0), 10)
	}
	entries = []AuditEntry{}
	scanned := 0
	for {
		msgs, err := s.rdb.XRevRangeN(ctx, keyAudit, end, start, auditBatch).Result()
		if err != nil {
			return nil, "", fmt.Errorf("read audit: %w", err)
		}
		for _, m := range msgs {
			scanned++
			e := auditEntry(m)
			if (q.Tenant == "" || e.Tenant == q.Tenant) && (q.Action == "" || e.Action == q.Action) {
				entries = append(entries, e)
				if len(entries) == limit {
					return entries, m.ID, nil
				}
			}
			if scanned >= auditScan {
				return entries, m.ID, nil
			}
		}
		if len(msgs) < auditBatch {
			return entries, "", nil
		}
		end = "(" + msgs[len(msgs)-1].ID
	}
}

func auditEntry(m redis.XMessage) AuditEntry {
	str := func(k string) string { v, _ := m.Values[k].(string); return v }
	e := AuditEntry{ID: m.ID, Actor: str("actor"), Action: str("action"), Target: str("target"),
		Tenant: str("tenant"), Result: str("result"), RequestID: str("request_id")}
	ms, _, _ := strings.Cut(m.ID, "-")
	if n, err := strconv.ParseInt(ms, 10, 64); err == nil {
		e.Time = time.UnixMilli(n).UTC().Format(time.RFC3339Nano)
	}
	return e
}

// ValidAuditCursor reports whether c can be an AuditQuery.Cursor: a stream
// entry id "<ms>-<seq>" in decimal.
func ValidAuditCursor(c string) bool {
	_, _, ok := parseStreamID(c)
	return ok
}

// parseStreamID reads a stream entry id "<ms>-<seq>", both decimal uint64.
func parseStreamID(id string) (ms, seq uint64, ok bool) {
	a, b, ok := strings.Cut(id, "-")
	if !ok {
		return 0, 0, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return ms, seq, err1 == nil && err2 == nil
}
