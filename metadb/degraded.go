package metadb

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/granary-db/granary/proto/buspb"
	"github.com/redis/go-redis/v9"
)

// Degraded writes. A pair whose master failed over has no replica until a
// spare is attached; its confirmed dbs' writes are refused meanwhile,
// since nothing can confirm them. When no spare comes within the master's
// degrade-after time (the spare pool is empty, or the spare attached
// failed too), the master degrades the pair's writes: proxies acknowledge
// them without a replica, as in async mode, and every tenant concerned
// sees it, in its db's view (write_degraded) and its audit stream
// (db.writes_degraded). The replica's attach (FinishReplace) confirms
// writes again, in the same transaction, with db.writes_confirmed.

// SetWritesDegraded degrades (or confirms again) the writes of a pair's
// dbs, with a topology bump and a WritesDegraded message that makes the
// proxies reload their routes. It changes nothing and reports false when
// the pair is already so, or, to degrade, when the pair has a replica
// again. Each db on the pair gets an audit entry for its tenant.
func (s *Store) SetWritesDegraded(ctx context.Context, f *Fence, pair string, degraded bool) (bool, error) {
	var changed bool
	err := s.txn(ctx, f, func(tx *redis.Tx) error {
		changed = false
		p, err := getJSON[Pair](ctx, tx, keyPair(pair))
		if err != nil {
			return fmt.Errorf("pair %s: %w", pair, err)
		}
		if p.WritesDegraded == degraded || (degraded && p.Replica != "") {
			return nil
		}
		p.WritesDegraded = degraded
		by := f.holder()
		entries, err := s.degradeAudit(ctx, tx, p.ID, degraded, "master/"+by, "")
		if err != nil {
			return err
		}
		msg := &buspb.Envelope{Payload: &buspb.Envelope_WritesDegraded{WritesDegraded: &buspb.WritesDegraded{Pair: p.ID, Degraded: degraded}}}
		top := &topology{sender: "master/" + by, msgs: []*buspb.Envelope{msg}}
		next, payloads, err := top.stamp(ctx, tx)
		if err != nil {
			return err
		}
		b, err := json.Marshal(p)
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.Set(ctx, keyPair(p.ID), b, 0)
			queueTopology(ctx, pl, next, payloads)
			for _, e := range entries {
				s.queueAudit(ctx, pl, e)
			}
			return nil
		})
		changed = err == nil
		return err
	}, keyPair(pair), keyVersion)
	return changed, err
}

// degradeAudit builds the audit entries of a pair's writes degraded or
// confirmed again: one per db on the pair, for its tenant.
func (s *Store) degradeAudit(ctx context.Context, tx *redis.Tx, pair string, degraded bool, actor, requestID string) ([]*AuditEntry, error) {
	owners, err := tx.HGetAll(ctx, keyPairOwners(pair)).Result()
	if err != nil {
		return nil, err
	}
	action, result := AuditWritesConfirmed, AuditOK
	if degraded {
		action = AuditWritesDegraded
	}
	out := make([]*AuditEntry, 0, len(owners))
	for _, owner := range owners {
		tenant, index, ok := strings.Cut(owner, "/")
		if _, err := strconv.Atoi(index); !ok || err != nil {
			continue
		}
		out = append(out, &AuditEntry{Actor: actor, Action: action, Target: owner + " (pair " + pair + ")",
			Tenant: tenant, Result: result, RequestID: requestID})
	}
	return out, nil
}

// DegradeDecision is what DecideDegrade says of one pair.
type DegradeDecision struct {
	Pair     string
	Degraded bool // true: degrade its writes; false: confirm them again
}

// DecideDegrade says which pairs' writes to degrade (no replica for at
// least after) and which to confirm again (a replica back, the flag still
// set). after <= 0 never degrades.
func DecideDegrade(pairs []Pair, now time.Time, after time.Duration) []DegradeDecision {
	var out []DegradeDecision
	for _, p := range pairs {
		switch {
		case p.WritesDegraded && p.Replica != "":
			out = append(out, DegradeDecision{Pair: p.ID, Degraded: false})
		case !p.WritesDegraded && after > 0 && p.Replica == "" && !p.ReplicaLostAt.IsZero() && now.Sub(p.ReplicaLostAt) >= after:
			out = append(out, DegradeDecision{Pair: p.ID, Degraded: true})
		}
	}
	return out
}
