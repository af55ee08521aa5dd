package metadb

import (
	"strconv"
)

// The whole metadb key space. Every key and channel name is built here and
// nowhere else.
//
//	granary:version                INT   topology version; bumped, with a bus message, by every change of who serves what
//	granary:leader                 STR   "<master id>/<fencing token>" of the leading master; PX lease
//	granary:fence                  INT   last fencing token handed out
//	granary:bus                    CHAN  bus: protobuf Envelopes (proto/bus.proto)
//	granary:tenants                SET   tenant names
//	granary:tenant:<name>          STR   JSON Tenant (credentials hashed; limits, changed by SetLimits)
//	granary:tenant:<name>:dbs      HASH  db index -> JSON DB (the tenant's dbs and the slot serving each)
//	granary:tenant:<name>:sizes    HASH  db index -> JSON DBSize (the keeper's last measurement of the db)
//	granary:tenant:<name>:exports  ZSET  export job id -> creation time (unix ms): the tenant's kept exports, outliving their dbs (exports.go)
//	granary:token:<sha256 hex>     STR   tenant name owning an API token
//	granary:pairs                  SET   all pair ids
//	granary:pool:<size>            SET   pair ids of one size class ("64M")
//	granary:pair:<id>              STR   JSON Pair
//	granary:pair:<id>:free         SET   free db numbers of a pair
//	granary:pair:<id>:owners       HASH  db number -> "<tenant>/<index>" owning it
//	granary:pair:<id>:health       STR   JSON PairHealth: the watching keeper's last report on the pair
//	granary:pool:<size>:rebalance  STR   id of the pool's last rebalance job (rebalance.go)
//	granary:addrs                  HASH  host:port -> "pair <id> master|replica" or "spare"
//	granary:spares                 SET   spare server addresses
//	granary:proxies                ZSET  proxy id -> lease expiry (unix ms)
//	granary:proxy:<id>             STR   JSON Proxy
//	granary:keepers                ZSET  keeper id -> lease expiry (unix ms)
//	granary:keeper:<id>            STR   JSON Keeper
//	granary:jobs                   ZSET  job id -> creation time (unix ms)
//	granary:jobs:active            SET   ids of jobs not yet done or failed
//	granary:job:<id>               STR   JSON Job
//	granary:seq:<name>             INT   id counters ("pair")
//	granary:demoted                SET   old masters demoted by a failover: never routed to again; emptied, they rejoin the spares
//	granary:usage:<tenant>/<index> ZSET  JSON UsagePoint -> sample time (unix ms): the db's usage history, capped in points and age (usage.go)
//	granary:tenant:<name>:alerts   HASH  db index -> JSON AlertRule (thresholds, webhook, signing secret, which were crossed at the last sample)
//	granary:alerts:<tenant>/<index> HASH alert id -> JSON Alert: the db's alert history and delivery states, capped (AlertHistoryKeep)
//	granary:alerts:pending:<tenant> HASH "<index>/<metric>" -> alert id: the tenant's undelivered alerts, at most one per db and metric
//	granary:alerts:tenants         SET   tenants with pending alerts
//	granary:audit                  STREAM audit entries (actor, action, target, tenant, result, request_id), capped by length and age (audit.go)
const (
	keyVersion    = "granary:version"
	keyLeader     = "granary:leader"
	keyFence      = "granary:fence"
	keyBus        = "granary:bus"
	keyTenants    = "granary:tenants"
	keyPairs      = "granary:pairs"
	keyAddrs      = "granary:addrs"
	keySpares     = "granary:spares"
	keyProxies    = "granary:proxies"
	keyKeepers    = "granary:keepers"
	keyJobs       = "granary:jobs"
	keyJobsActive = "granary:jobs:active"
)

func keyTenant(name string) string    { return "granary:tenant:" + name }
func keyTenantDBs(name string) string { return "granary:tenant:" + name + ":dbs" }
func keyToken(hash string) string     { return "granary:token:" + hash }
func keyPool(size string) string      { return "granary:pool:" + size }
func keyPair(id string) string        { return "granary:pair:" + id }
func keyPairFree(id string) string    { return "granary:pair:" + id + ":free" }
func keyPairOwners(id string) string  { return "granary:pair:" + id + ":owners" }
func keyProxy(id string) string       { return "granary:proxy:" + id }
func keyKeeper(id string) string      { return "granary:keeper:" + id }
func keyJob(id string) string         { return "granary:job:" + id }
func keySeq(name string) string       { return "granary:seq:" + name }

func field(index int) string { return strconv.Itoa(index) }

func keyPairHealth(id string) string      { return "granary:pair:" + id + ":health" }
func keyTenantSizes(name string) string   { return "granary:tenant:" + name + ":sizes" }
func keyTenantExports(name string) string { return "granary:tenant:" + name + ":exports" }
func keyPoolRebalance(size string) string { return "granary:pool:" + size + ":rebalance" }

const keyDemoted = "granary:demoted"

const keyAudit = "granary:audit"

// AuditKey is the audit stream's key, for tests that compare whole metadb
// snapshots: an audited refusal changes nothing but the audit stream.
func AuditKey() string { return keyAudit }

func keyUsage(tenant string, index int) string { return "granary:usage:" + tenant + "/" + field(index) }
func keyTenantAlerts(name string) string       { return "granary:tenant:" + name + ":alerts" }
func keyAlertHistory(tenant string, index int) string {
	return "granary:alerts:" + tenant + "/" + field(index)
}
func keyAlertsPending(tenant string) string { return "granary:alerts:pending:" + tenant }

const keyAlertTenants = "granary:alerts:tenants"
