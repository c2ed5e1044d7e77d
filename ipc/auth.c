/* Cookie-keyed mutual authentication and message sealing (auth.h has the protocol). */
#define _GNU_SOURCE
#include "ipc/auth.h"

#include "base/cmcp.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const unsigned char magic[4] = {'C', 'M', 'C', 'P'};
#define AUTH_VERSION 1
#define PROOF_BYTES crypto_auth_BYTES
#define AEAD_ABYTES crypto_aead_xchacha20poly1305_ietf_ABYTES

const char *auth_strerror(int rc)
{
    switch (rc) {
    case AUTH_OK:
        return "ok";
    case AUTH_E_MALFORMED:
        return "malformed message (not the cmcp admin protocol, or another version)";
    case AUTH_E_PROOF:
        return "wrong cookie: the peer's proof does not match";
    case AUTH_E_SESSION:
        return "unknown or expired session";
    case AUTH_E_REPLAY:
        return "replayed or out-of-order message (counter not above the last accepted)";
    case AUTH_E_TAMPERED:
        return "message failed authentication (tampered, or sealed with another key)";
    case AUTH_E_NOMEM:
        return "out of memory";
    case AUTH_E_STATE:
        return "message out of sequence for the handshake";
    }
    return "unknown error";
}

/* ---- keys and cookies ---- */

int auth_key_from_cookie(struct auth_key *k, const void *cookie, size_t len)
{
    const unsigned char *p = cookie;
    while (len > 0 && (p[0] == ' ' || p[0] == '\t' || p[0] == '\n' || p[0] == '\r'))
        p++, len--;
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == '\n' ||
                       p[len - 1] == '\r'))
        len--;
    if (len < AUTH_MIN_COOKIE)
        return AUTH_E_MALFORMED;
    unsigned char master[crypto_kdf_KEYBYTES];
    crypto_generichash(master, sizeof(master), p, len, NULL, 0);
    crypto_kdf_derive_from_key(k->auth, sizeof(k->auth), 1, "cmcpauth", master);
    crypto_kdf_derive_from_key(k->base, sizeof(k->base), 2, "cmcpsess", master);
    sodium_memzero(master, sizeof(master));
    return AUTH_OK;
}

/* mkdir -p for the cookie's directory; new directories are private. */
static int mkdir_parents(const char *path)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", path);
    char *slash = strrchr(buf, '/');
    if (!slash || slash == buf)
        return 0;
    *slash = '\0';
    return cmcp_mkdir_p(buf, 0700) == 0 ? 0 : -1;
}

/* Writes a new random cookie; link() makes it appear complete or not at all. */
static int cookie_create(const char *path, char *err, size_t errlen)
{
    if (mkdir_parents(path) != 0) {
        snprintf(err, errlen, "cannot create the directory of cookie file %s: %s", path,
                 strerror(errno));
        return -1;
    }
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create cookie file %s: %s", tmp, strerror(errno));
        return -1;
    }
    unsigned char rnd[32];
    char hex[2 * sizeof(rnd) + 2];
    randombytes_buf(rnd, sizeof(rnd));
    sodium_bin2hex(hex, sizeof(hex), rnd, sizeof(rnd));
    sodium_memzero(rnd, sizeof(rnd));
    size_t n = strlen(hex);
    hex[n++] = '\n';
    bool ok = write(fd, hex, n) == (ssize_t)n && fsync(fd) == 0;
    sodium_memzero(hex, sizeof(hex));
    ok = close(fd) == 0 && ok;
    int rc = ok && link(tmp, path) == 0 ? 0 : -1;
    int e = errno;
    unlink(tmp);
    if (rc != 0 && e == EEXIST)
        return 0; /* someone else made it first: use theirs */
    if (rc != 0)
        snprintf(err, errlen, "cannot write cookie file %s: %s", path, strerror(e));
    return rc;
}

int auth_cookie_load(const char *path, bool create, struct auth_key *k, bool *created, char *err,
                     size_t errlen)
{
    if (created)
        *created = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create) {
        if (cookie_create(path, err, errlen) != 0)
            return -1;
        if (created)
            *created = true;
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        if (errno == ENOENT)
            snprintf(err, errlen,
                     "cookie file %s does not exist (the node creates it on first start; "
                     "give the node's file with --cookie-file or CMCP_COOKIE_FILE)",
                     path);
        else
            snprintf(err, errlen, "cannot open cookie file %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "cookie file %s is not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen,
                 "cookie file %s is accessible by group or others (mode %03o); only its owner "
                 "may read it: chmod 600 %s",
                 path, (unsigned)(st.st_mode & 0777), path);
        close(fd);
        return -1;
    }
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "cannot read cookie file %s: %s", path, strerror(errno));
        return -1;
    }
    int rc = auth_key_from_cookie(k, buf, (size_t)n);
    sodium_memzero(buf, sizeof(buf));
    if (rc != AUTH_OK) {
        snprintf(err, errlen,
                 "cookie file %s holds fewer than %d characters; put a long random secret in it "
                 "(or delete it and let the node make one)",
                 path, AUTH_MIN_COOKIE);
        return -1;
    }
    return 0;
}

/* ---- framing ---- */

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)(v & 0xff);
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static void header_write(unsigned char *p, uint8_t type, const unsigned char *sid, uint64_t ctr,
                         uint64_t ref)
{
    memcpy(p, magic, 4);
    p[4] = AUTH_VERSION;
    p[5] = type;
    if (sid)
        memcpy(p + 6, sid, AUTH_SID_BYTES);
    else
        memset(p + 6, 0, AUTH_SID_BYTES);
    put64(p + 22, ctr);
    put64(p + 30, ref);
}

int auth_header_parse(const uint8_t *msg, size_t len, struct auth_header *h)
{
    if (len < AUTH_HEADER_BYTES || memcmp(msg, magic, 4) != 0 || msg[4] != AUTH_VERSION)
        return AUTH_E_MALFORMED;
    h->type = msg[5];
    memcpy(h->sid, msg + 6, AUTH_SID_BYTES);
    h->ctr = get64(msg + 22);
    h->ref = get64(msg + 30);
    return AUTH_OK;
}

/* A message with a clear payload. */
static int plain_msg(uint8_t type, const unsigned char *sid, uint64_t ctr, const void *p1,
                     size_t n1, uint8_t **out, size_t *outlen)
{
    uint8_t *m = malloc(AUTH_HEADER_BYTES + n1);
    if (!m)
        return AUTH_E_NOMEM;
    header_write(m, type, sid, ctr, 0);
    if (n1)
        memcpy(m + AUTH_HEADER_BYTES, p1, n1);
    *out = m;
    *outlen = AUTH_HEADER_BYTES + n1;
    return AUTH_OK;
}

int auth_error_msg(const unsigned char *sid, const char *text, uint8_t **out, size_t *outlen)
{
    return plain_msg(AUTH_ERROR, sid, 0, text, strlen(text), out, outlen);
}

static void nonce_of(unsigned char nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES],
                     uint64_t ctr)
{
    memset(nonce, 0, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
    put64(nonce + crypto_aead_xchacha20poly1305_ietf_NPUBBYTES - 8, ctr);
}

/* Seals pt after a header already written at m (prefix bytes of clear payload may precede). */
static void seal_into(uint8_t *m, size_t prefix, const unsigned char *key, uint64_t ctr,
                      const void *pt, size_t ptlen)
{
    unsigned char nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
    nonce_of(nonce, ctr);
    unsigned long long clen;
    crypto_aead_xchacha20poly1305_ietf_encrypt(m + AUTH_HEADER_BYTES + prefix, &clen, pt, ptlen,
                                               m, AUTH_HEADER_BYTES, NULL, nonce, key);
}

int64_t auth_seal(struct auth_session *s, uint8_t type, uint64_t ref, const void *pt,
                  size_t ptlen, uint8_t **out, size_t *outlen)
{
    size_t n = AUTH_HEADER_BYTES + ptlen + AEAD_ABYTES;
    uint8_t *m = malloc(n);
    if (!m)
        return AUTH_E_NOMEM;
    uint64_t ctr = ++s->send_ctr;
    header_write(m, type, s->sid, ctr, ref);
    seal_into(m, 0, s->k_send, ctr, pt, ptlen);
    *out = m;
    *outlen = n;
    return (int64_t)ctr;
}

/* Opens the sealed part that starts `prefix` bytes after the header. */
static int open_from(struct auth_session *s, const uint8_t *msg, size_t len, size_t prefix,
                     const struct auth_header *h, uint8_t **pt, size_t *ptlen)
{
    if (len < AUTH_HEADER_BYTES + prefix + AEAD_ABYTES)
        return AUTH_E_MALFORMED;
    /* Checked before decrypting (cheap), but the counter moves only once the seal verifies:
     * a forged message with a huge counter must not lock the real peer out. */
    if (h->ctr <= s->recv_ctr)
        return AUTH_E_REPLAY;
    size_t clen = len - AUTH_HEADER_BYTES - prefix;
    uint8_t *p = malloc(clen - AEAD_ABYTES + 1);
    if (!p)
        return AUTH_E_NOMEM;
    unsigned char nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
    nonce_of(nonce, h->ctr);
    unsigned long long plen;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(p, &plen, NULL,
                                                   msg + AUTH_HEADER_BYTES + prefix, clen, msg,
                                                   AUTH_HEADER_BYTES, nonce, s->k_recv) != 0) {
        free(p);
        return AUTH_E_TAMPERED;
    }
    p[plen] = '\0';
    s->recv_ctr = h->ctr;
    *pt = p;
    *ptlen = (size_t)plen;
    return AUTH_OK;
}

int auth_open(struct auth_session *s, uint8_t type, const uint8_t *msg, size_t len,
              struct auth_header *h, uint8_t **pt, size_t *ptlen)
{
    int rc = auth_header_parse(msg, len, h);
    if (rc != AUTH_OK)
        return rc;
    if (h->type != type)
        return h->type == AUTH_ERROR ? AUTH_E_SESSION : AUTH_E_STATE;
    if (sodium_memcmp(h->sid, s->sid, AUTH_SID_BYTES) != 0)
        return AUTH_E_SESSION;
    return open_from(s, msg, len, 0, h, pt, ptlen);
}

/* ---- proofs and session keys ---- */

static void proof(unsigned char out[PROOF_BYTES], const struct auth_key *k, const char *label,
                  const unsigned char *sid, const unsigned char *cn, const unsigned char *sn)
{
    unsigned char buf[6 + AUTH_SID_BYTES + 2 * AUTH_NONCE_BYTES];
    memcpy(buf, label, 6);
    memcpy(buf + 6, sid, AUTH_SID_BYTES);
    memcpy(buf + 6 + AUTH_SID_BYTES, cn, AUTH_NONCE_BYTES);
    memcpy(buf + 6 + AUTH_SID_BYTES + AUTH_NONCE_BYTES, sn, AUTH_NONCE_BYTES);
    crypto_auth(out, buf, sizeof(buf), k->auth);
}

static void session_keys(struct auth_session *s, const struct auth_key *k, const unsigned char *cn,
                         const unsigned char *sn, bool client)
{
    unsigned char in[AUTH_SID_BYTES + 2 * AUTH_NONCE_BYTES], ks[crypto_kdf_KEYBYTES];
    memcpy(in, s->sid, AUTH_SID_BYTES);
    memcpy(in + AUTH_SID_BYTES, cn, AUTH_NONCE_BYTES);
    memcpy(in + AUTH_SID_BYTES + AUTH_NONCE_BYTES, sn, AUTH_NONCE_BYTES);
    crypto_generichash(ks, sizeof(ks), in, sizeof(in), k->base, sizeof(k->base));
    crypto_kdf_derive_from_key(client ? s->k_send : s->k_recv, AUTH_KEY_BYTES, 1, "cmcp_c2s", ks);
    crypto_kdf_derive_from_key(client ? s->k_recv : s->k_send, AUTH_KEY_BYTES, 2, "cmcp_s2c", ks);
    sodium_memzero(ks, sizeof(ks));
    s->send_ctr = s->recv_ctr = 0;
}

/* ---- client ---- */

void auth_client_init(struct auth_client *c, const struct auth_key *k)
{
    memset(c, 0, sizeof(*c));
    c->key = k;
}

int auth_client_hello(struct auth_client *c, uint8_t **out, size_t *outlen)
{
    randombytes_buf(c->cn, sizeof(c->cn));
    c->state = 1;
    return plain_msg(AUTH_HELLO, NULL, 0, c->cn, sizeof(c->cn), out, outlen);
}

int auth_client_auth(struct auth_client *c, const uint8_t *in, size_t len, uint8_t **out,
                     size_t *outlen)
{
    struct auth_header h;
    int rc = auth_header_parse(in, len, &h);
    if (rc != AUTH_OK)
        return rc;
    if (c->state != 1)
        return AUTH_E_STATE;
    if (h.type == AUTH_ERROR)
        return AUTH_E_SESSION;
    if (h.type != AUTH_CHALLENGE || len != AUTH_HEADER_BYTES + AUTH_NONCE_BYTES)
        return AUTH_E_MALFORMED;
    memcpy(c->s.sid, h.sid, AUTH_SID_BYTES);
    memcpy(c->sn, in + AUTH_HEADER_BYTES, AUTH_NONCE_BYTES);
    unsigned char p[PROOF_BYTES];
    proof(p, c->key, "cmcp-c", c->s.sid, c->cn, c->sn);
    c->state = 2;
    return plain_msg(AUTH_AUTH, c->s.sid, 0, p, sizeof(p), out, outlen);
}

int auth_client_welcome(struct auth_client *c, const uint8_t *in, size_t len, uint8_t **body,
                        size_t *bodylen)
{
    struct auth_header h;
    int rc = auth_header_parse(in, len, &h);
    if (rc != AUTH_OK)
        return rc;
    if (c->state != 2)
        return AUTH_E_STATE;
    if (h.type == AUTH_ERROR)
        return AUTH_E_PROOF; /* the node refused our proof */
    if (h.type != AUTH_WELCOME || len < AUTH_HEADER_BYTES + PROOF_BYTES + AEAD_ABYTES ||
        sodium_memcmp(h.sid, c->s.sid, AUTH_SID_BYTES) != 0)
        return AUTH_E_MALFORMED;
    unsigned char p[PROOF_BYTES];
    proof(p, c->key, "cmcp-s", c->s.sid, c->cn, c->sn);
    if (sodium_memcmp(p, in + AUTH_HEADER_BYTES, PROOF_BYTES) != 0)
        return AUTH_E_PROOF;
    session_keys(&c->s, c->key, c->cn, c->sn, true);
    rc = open_from(&c->s, in, len, PROOF_BYTES, &h, body, bodylen);
    if (rc != AUTH_OK)
        return rc;
    c->state = 3;
    return AUTH_OK;
}

/* ---- server ---- */

void auth_server_init(struct auth_server *sv, const struct auth_key *k)
{
    memset(sv, 0, sizeof(*sv));
    sv->key = k;
}

int auth_server_hello(struct auth_server *sv, const uint8_t *in, size_t len, double now,
                      uint8_t **out, size_t *outlen)
{
    struct auth_header h;
    int rc = auth_header_parse(in, len, &h);
    if (rc != AUTH_OK)
        return rc;
    if (h.type != AUTH_HELLO || len != AUTH_HEADER_BYTES + AUTH_NONCE_BYTES)
        return AUTH_E_MALFORMED;
    /* A free slot, an expired one, or the oldest: a flood of HELLOs only delays handshakes. */
    struct auth_pending *slot = NULL;
    for (int i = 0; i < AUTH_MAX_PENDING; i++) {
        struct auth_pending *p = &sv->pending[i];
        if (!p->used || now - p->created > AUTH_PENDING_TTL) {
            slot = p;
            break;
        }
        if (!slot || p->created < slot->created)
            slot = p;
    }
    memset(slot, 0, sizeof(*slot));
    slot->used = true;
    slot->created = now;
    randombytes_buf(slot->sid, sizeof(slot->sid));
    randombytes_buf(slot->sn, sizeof(slot->sn));
    memcpy(slot->cn, in + AUTH_HEADER_BYTES, AUTH_NONCE_BYTES);
    return plain_msg(AUTH_CHALLENGE, slot->sid, 0, slot->sn, sizeof(slot->sn), out, outlen);
}

static struct auth_session *session_slot(struct auth_server *sv, double now)
{
    struct auth_session *slot = NULL;
    for (int i = 0; i < AUTH_MAX_SESSIONS; i++) {
        struct auth_session *s = &sv->sessions[i];
        if (!s->used || now - s->last_used > AUTH_SESSION_TTL)
            return s;
        if (!slot || s->last_used < slot->last_used)
            slot = s;
    }
    return slot;
}

int auth_server_auth(struct auth_server *sv, const uint8_t *in, size_t len, double now,
                     const char *welcome, uint8_t **out, size_t *outlen)
{
    struct auth_header h;
    int rc = auth_header_parse(in, len, &h);
    if (rc != AUTH_OK)
        return rc;
    if (h.type != AUTH_AUTH || len != AUTH_HEADER_BYTES + PROOF_BYTES)
        return AUTH_E_MALFORMED;
    struct auth_pending *p = NULL;
    for (int i = 0; i < AUTH_MAX_PENDING; i++)
        if (sv->pending[i].used &&
            sodium_memcmp(sv->pending[i].sid, h.sid, AUTH_SID_BYTES) == 0)
            p = &sv->pending[i];
    if (!p || now - p->created > AUTH_PENDING_TTL) {
        if (p)
            memset(p, 0, sizeof(*p));
        return AUTH_E_SESSION;
    }
    struct auth_pending hs = *p;
    sodium_memzero(p, sizeof(*p)); /* one try per challenge */
    unsigned char expect[PROOF_BYTES];
    proof(expect, sv->key, "cmcp-c", hs.sid, hs.cn, hs.sn);
    if (sodium_memcmp(expect, in + AUTH_HEADER_BYTES, PROOF_BYTES) != 0)
        return AUTH_E_PROOF;
    struct auth_session *s = session_slot(sv, now);
    memset(s, 0, sizeof(*s));
    memcpy(s->sid, hs.sid, AUTH_SID_BYTES);
    session_keys(s, sv->key, hs.cn, hs.sn, false);
    s->used = true;
    s->last_used = now;
    size_t wl = strlen(welcome);
    size_t n = AUTH_HEADER_BYTES + PROOF_BYTES + wl + AEAD_ABYTES;
    uint8_t *m = malloc(n);
    if (!m) {
        s->used = false;
        return AUTH_E_NOMEM;
    }
    uint64_t ctr = ++s->send_ctr;
    header_write(m, AUTH_WELCOME, s->sid, ctr, 0);
    proof(m + AUTH_HEADER_BYTES, sv->key, "cmcp-s", hs.sid, hs.cn, hs.sn);
    seal_into(m, PROOF_BYTES, s->k_send, ctr, welcome, wl);
    *out = m;
    *outlen = n;
    return AUTH_OK;
}

struct auth_session *auth_server_session(struct auth_server *sv, const uint8_t *in, size_t len,
                                         double now)
{
    struct auth_header h;
    if (auth_header_parse(in, len, &h) != AUTH_OK)
        return NULL;
    for (int i = 0; i < AUTH_MAX_SESSIONS; i++) {
        struct auth_session *s = &sv->sessions[i];
        if (s->used && sodium_memcmp(s->sid, h.sid, AUTH_SID_BYTES) == 0) {
            if (now - s->last_used > AUTH_SESSION_TTL) {
                sodium_memzero(s, sizeof(*s));
                return NULL;
            }
            return s; /* the caller refreshes last_used once the message verifies */
        }
    }
    return NULL;
}
