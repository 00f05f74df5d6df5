package apikeys

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/redis/go-redis/v9"
)

// SecretPrefix starts every secret that Create issues.
const SecretPrefix = "ag_live_"

// secretDigits is the length of the random part: 256 bits in base62.
const secretDigits = 43

// Errors of the store.
var (
	// ErrNotFound: no key with this secret or id (never issued, or revoked).
	ErrNotFound = errors.New("api key not found")
	// ErrInvalid: the tenant or name of a new key is not acceptable.
	ErrInvalid = errors.New("invalid api key parameters")
)

// TenantPattern is what a tenant name must match.
var TenantPattern = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// Key is an issued API key, without its secret.
type Key struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
	Name   string `json:"name,omitempty"`
	// Admin keys also reach the admin routes.
	Admin bool `json:"admin"`
	// Prefix is the start of the secret, to tell keys apart in lists.
	Prefix     string    `json:"prefix"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	// Hash is the SHA-256 of the secret.
	Hash [sha256.Size]byte `json:"-"`
}

// Secret is an API key's secret. Every textual view of it (fmt's verbs,
// log/slog) shows REDACTED; Reveal returns it, for the one time it is shown.
type Secret string

// Reveal returns the secret itself.
func (s Secret) Reveal() string { return string(s) }

// String returns REDACTED.
func (s Secret) String() string { return "REDACTED" }

// GoString returns apikeys.Secret(REDACTED).
func (s Secret) GoString() string { return "apikeys.Secret(REDACTED)" }

// LogValue returns REDACTED.
func (s Secret) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// Hash returns the SHA-256 of a secret, the form in which keys are stored and
// looked up.
func Hash(secret string) [sha256.Size]byte { return sha256.Sum256([]byte(secret)) }

// NewSecret returns a fresh secret: SecretPrefix and 256 random bits in base62.
func NewSecret() (Secret, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate api key: %w", err)
	}
	digits := new(big.Int).SetBytes(b).Text(62)
	return Secret(SecretPrefix + strings.Repeat("0", secretDigits-len(digits)) + digits), nil
}

// Config configures a Store.
type Config struct {
	// Prefix starts every Redis key. Defaults to "ag:".
	Prefix string
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
}

// Store keeps API keys in Redis.
type Store struct {
	rdb redis.UniversalClient
	k   keys
	now func() time.Time
}

// NewStore returns a store on rdb.
func NewStore(rdb redis.UniversalClient, cfg Config) *Store {
	if cfg.Prefix == "" {
		cfg.Prefix = "ag:"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{rdb: rdb, k: keys{cfg.Prefix}, now: cfg.Now}
}

// CreateParams describe a new key.
type CreateParams struct {
	// Tenant owns the key: 1-64 of [a-z0-9_-]. Required.
	Tenant string
	// Name says what the key is for: at most 100 printable characters.
	Name string
	// Admin keys also reach the admin routes.
	Admin bool
}

func (p CreateParams) validate() error {
	if !TenantPattern.MatchString(p.Tenant) {
		return fmt.Errorf("%w: tenant %q must be 1-64 of [a-z0-9_-]", ErrInvalid, p.Tenant)
	}
	if len(p.Name) > 100 || strings.ContainsFunc(p.Name, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return fmt.Errorf("%w: name must be at most 100 printable characters", ErrInvalid)
	}
	return nil
}

// Create issues a key and returns it with its secret, which is not stored
// and cannot be read again. It returns ErrInvalid for bad parameters.
func (s *Store) Create(ctx context.Context, p CreateParams) (*Key, Secret, error) {
	if err := p.validate(); err != nil {
		return nil, "", err
	}
	secret, err := NewSecret()
	if err != nil {
		return nil, "", err
	}
	id := make([]byte, 8)
	rand.Read(id) // never fails (crypto/rand)
	k := &Key{
		ID: "key_" + hex.EncodeToString(id), Tenant: p.Tenant, Name: p.Name, Admin: p.Admin,
		Prefix: string(secret)[:len(SecretPrefix)+4], CreatedAt: s.now().UTC().Truncate(time.Millisecond),
		Hash: Hash(string(secret)),
	}
	// The index first: a key that made it into the record but not into the
	// index could not be revoked by id. A dangling index entry is skipped by
	// List and removed by Revoke.
	pipe := s.rdb.Pipeline()
	pipe.HSet(ctx, s.k.index(), k.ID, hex.EncodeToString(k.Hash[:]))
	pipe.HSet(ctx, s.k.record(k.Hash), "id", k.ID, "tenant", k.Tenant, "name", k.Name,
		"admin", boolField(k.Admin), "prefix", k.Prefix, "created_at", k.CreatedAt.Format(time.RFC3339Nano))
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, "", fmt.Errorf("create api key: %w", err)
	}
	return k, secret, nil
}

func boolField(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Lookup returns the key whose secret has the SHA-256 hash, or ErrNotFound.
func (s *Store) Lookup(ctx context.Context, hash [sha256.Size]byte) (*Key, error) {
	h, err := s.rdb.HGetAll(ctx, s.k.record(hash)).Result()
	if err != nil {
		return nil, fmt.Errorf("look up api key: %w", err)
	}
	k, ok := decodeKey(h, hash)
	if !ok {
		return nil, ErrNotFound
	}
	return k, nil
}

// decodeKey reads a record; a partial one (a revoke that raced a touch) is
// not a key.
func decodeKey(h map[string]string, hash [sha256.Size]byte) (*Key, bool) {
	if h["id"] == "" || h["tenant"] == "" {
		return nil, false
	}
	created, err := time.Parse(time.RFC3339Nano, h["created_at"])
	if err != nil {
		return nil, false
	}
	k := &Key{ID: h["id"], Tenant: h["tenant"], Name: h["name"], Admin: h["admin"] == "1",
		Prefix: h["prefix"], CreatedAt: created, Hash: hash}
	if v := h["last_used_at"]; v != "" {
		k.LastUsedAt, _ = time.Parse(time.RFC3339Nano, v)
	}
	return k, true
}

// touchScript sets last_used_at on a record that still exists: a touch
// racing a revoke must not bring back part of the record.
var touchScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'last_used_at', ARGV[1])
end
return 0`)

// Touch records that the key was used at t. A revoked key is left alone.
func (s *Store) Touch(ctx context.Context, k *Key, t time.Time) error {
	err := touchScript.Run(ctx, s.rdb, []string{s.k.record(k.Hash)}, t.UTC().Format(time.RFC3339Nano)).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("touch api key: %w", err)
	}
	return nil
}

// List returns every key of tenant (every key when tenant is ""), oldest first.
func (s *Store) List(ctx context.Context, tenant string) ([]*Key, error) {
	idx, err := s.rdb.HGetAll(ctx, s.k.index()).Result()
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	type pending struct {
		hash [sha256.Size]byte
		cmd  *redis.MapStringStringCmd
	}
	var reads []pending
	pipe := s.rdb.Pipeline()
	for _, hx := range idx {
		var hash [sha256.Size]byte
		if b, err := hex.DecodeString(hx); err == nil && len(b) == len(hash) {
			copy(hash[:], b)
			reads = append(reads, pending{hash, pipe.HGetAll(ctx, s.k.record(hash))})
		}
	}
	if len(reads) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("list api keys: %w", err)
		}
	}
	out := []*Key{}
	for _, r := range reads {
		k, ok := decodeKey(r.cmd.Val(), r.hash)
		if ok && (tenant == "" || k.Tenant == tenant) {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b *Key) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// Revoke deletes the key with this id, or returns ErrNotFound. The key stops
// working at once in Redis; servers that cached it accept it until their
// cache entry expires.
func (s *Store) Revoke(ctx context.Context, id string) error {
	hx, err := s.rdb.HGet(ctx, s.k.index(), id).Result()
	if errors.Is(err, redis.Nil) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("revoke api key: %w", err)
	}
	var hash [sha256.Size]byte
	b, err := hex.DecodeString(hx)
	if err == nil && len(b) == len(hash) {
		copy(hash[:], b)
		// The record first: from then on the key is refused.
		if err := s.rdb.Del(ctx, s.k.record(hash)).Err(); err != nil {
			return fmt.Errorf("revoke api key: %w", err)
		}
	}
	if err := s.rdb.HDel(ctx, s.k.index(), id).Err(); err != nil {
		return fmt.Errorf("revoke api key: %w", err)
	}
	return nil
}

// Equal reports whether two hashes are equal, in constant time.
func Equal(a, b [sha256.Size]byte) bool { return subtle.ConstantTimeCompare(a[:], b[:]) == 1 }
