package master

import (
	"context"
	"errors"
	"fmt"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
)

// banChange is one quota decision: put a db under a write ban, or lift it.
type banChange struct {
	tenant string
	index  int
	ban    bool
	used   int64
	quota  int64
}

// decideBans is the quota policy: a serving db measured above its quota is
// banned from growing; a banned db measured at or under its quota is
// released. No hysteresis band is needed: while banned, a db cannot grow,
// so it only crosses back down when the tenant deletes or keys expire.
func decideBans(dbs []*metadb.DB) []banChange {
	var out []banChange
	for _, db := range dbs {
		if db.State != metadb.DBActive && db.State != metadb.DBResizing {
			continue
		}
		over := db.QuotaBytes > 0 && db.UsedBytes > db.QuotaBytes
		if over != db.Banned {
			out = append(out, banChange{tenant: db.Tenant, index: db.Index, ban: over, used: db.UsedBytes, quota: db.QuotaBytes})
		}
	}
	return out
}

// applyQuotas applies decideBans to the recorded sizes.
func (m *Master) applyQuotas(ctx context.Context, f *metadb.Fence) error {
	dbs, err := m.store.AllDBs(ctx)
	if err != nil {
		return fmt.Errorf("list dbs: %w", err)
	}
	for _, c := range decideBans(dbs) {
		_, err := m.store.UpdateDBAudited(ctx, f, m.sender(), c.tenant, c.index, func(db *metadb.DB) ([]*buspb.Envelope, *metadb.AuditEntry, error) {
			if db.Banned == c.ban {
				return nil, nil, nil
			}
			db.Banned = c.ban
			reason, action := "", metadb.AuditQuotaUnban
			if c.ban {
				reason, action = fmt.Sprintf("db uses %d bytes of its %d-byte quota", c.used, c.quota), metadb.AuditQuotaBan
			}
			audit := &metadb.AuditEntry{Actor: m.sender(), Action: action, Target: fmt.Sprintf("%s/%d", db.Tenant, db.Index),
				Tenant: db.Tenant, Result: metadb.AuditOK}
			return []*buspb.Envelope{{Payload: &buspb.Envelope_WriteBan{WriteBan: &buspb.WriteBan{
				Tenant: db.Tenant, Index: uint32(db.Index), Banned: c.ban, Reason: reason}}}}, audit, nil
		})
		if err != nil {
			if errors.Is(err, metadb.ErrNotFound) {
				continue // dropped meanwhile
			}
			return err
		}
		m.log.Info().Str("tenant", c.tenant).Int("index", c.index).Bool("banned", c.ban).
			Int64("used", c.used).Int64("quota", c.quota).Msg("write ban changed")
		m.metrics.banChanged(c.ban)
	}
	return nil
}
