/*
 * Authentication and sealing of the admin channel (cmcpctl <-> the admin
 * worker), keyed by the node's cookie. docs/operations.md describes it for
 * operators; this is the reference.
 *
 * Keys. master = BLAKE2b-256(cookie bytes); K_auth = kdf(master, 1,
 * "cmcpauth"); K_base = kdf(master, 2, "cmcpsess") (libsodium crypto_kdf).
 *
 * Every message starts with a 38-byte header:
 *   "CMCP" | version (1) | type (1) | sid (16) | ctr (8, big endian) | ref (8, big endian)
 *
 * Handshake (two req/rep round trips; the client proves first, so a
 * stranger who connects learns nothing that could test a guessed cookie):
 *   1 HELLO      C->S  payload cn (32 random bytes)
 *   2 CHALLENGE  S->C  sid (16, chosen by the server), payload sn (32 random bytes)
 *   3 AUTH       C->S  sid, payload crypto_auth(K_auth, "cmcp-c" | sid | cn | sn)
 *   4 WELCOME    S->C  sid, ctr 1, payload crypto_auth(K_auth, "cmcp-s" | sid | cn | sn)
 *                      followed by a sealed JSON body (node, version)
 * Session keys: K_sess = BLAKE2b-256(key K_base, sid | cn | sn);
 * K_c2s = kdf(K_sess, 1, "cmcp_c2s"), K_s2c = kdf(K_sess, 2, "cmcp_s2c").
 *
 * Sealed messages (5 REQUEST C->S, 6 RESPONSE S->C, and WELCOME's body):
 * XChaCha20-Poly1305 (IETF) under the direction's key, nonce = 16 zero
 * bytes | ctr, additional data = the header. ctr starts at 1 and strictly
 * increases in each direction; a receiver refuses anything not above the
 * last one it accepted (replays, reordering). A RESPONSE carries the
 * REQUEST's ctr in ref, so a response cannot be moved to another request.
 *
 * 7 ERROR (S->C, clear text payload): a refusal (bad proof, unknown
 * session, replay, tampering). It is not authenticated, so a client treats it
 * only as failure, never as an answer.
 */
#ifndef CMCP_AUTH_H
#define CMCP_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_KEY_BYTES 32
#define AUTH_NONCE_BYTES 32
#define AUTH_SID_BYTES 16
#define AUTH_HEADER_BYTES 38
#define AUTH_MAX_SESSIONS 32  /* server: authenticated sessions kept (least recently used go) */
#define AUTH_MAX_PENDING 32   /* server: handshakes between CHALLENGE and AUTH */
#define AUTH_PENDING_TTL 10.0 /* seconds a CHALLENGE stays answerable */
#define AUTH_SESSION_TTL 900.0 /* seconds an idle session lives */
#define AUTH_MIN_COOKIE 16    /* bytes: shorter cookies are refused as guessable */

enum auth_type {
    AUTH_HELLO = 1,
    AUTH_CHALLENGE = 2,
    AUTH_AUTH = 3,
    AUTH_WELCOME = 4,
    AUTH_REQUEST = 5,
    AUTH_RESPONSE = 6,
    AUTH_ERROR = 7,
};

/* Results; auth_strerror() says them in words. */
enum auth_result {
    AUTH_OK = 0,
    AUTH_E_MALFORMED = -1, /* not a message of this protocol (or a wrong version) */
    AUTH_E_PROOF = -2,     /* the peer's proof is wrong: it does not hold our cookie */
    AUTH_E_SESSION = -3,   /* unknown or expired session / handshake */
    AUTH_E_REPLAY = -4,    /* counter not above the last accepted one */
    AUTH_E_TAMPERED = -5,  /* the seal does not verify */
    AUTH_E_NOMEM = -6,
    AUTH_E_STATE = -7,     /* a message that does not fit the handshake's state */
};

const char *auth_strerror(int rc);

struct auth_key {
    unsigned char auth[AUTH_KEY_BYTES]; /* K_auth: proofs */
    unsigned char base[AUTH_KEY_BYTES]; /* K_base: session keys */
};

/* Derives the keys from cookie bytes (surrounding blanks and newlines ignored). */
int auth_key_from_cookie(struct auth_key *k, const void *cookie, size_t len);

/*
 * Loads a cookie file. With create, an absent file is made (mode 0600, in a
 * directory created 0700 if needed) holding 32 random bytes as hex. A file
 * readable or writable by group or others is refused, as ssh and Erlang do.
 * 0, or -1 with a sentence in err that says what to do.
 */
int auth_cookie_load(const char *path, bool create, struct auth_key *k, bool *created, char *err,
                     size_t errlen);

/* An established session, either side. */
struct auth_session {
    unsigned char sid[AUTH_SID_BYTES];
    unsigned char k_send[AUTH_KEY_BYTES], k_recv[AUTH_KEY_BYTES];
    uint64_t send_ctr; /* last counter sent */
    uint64_t recv_ctr; /* last counter accepted */
    double last_used;  /* server: for expiry and eviction */
    bool used;
};

/* A parsed header (no checks beyond magic/version/length). */
struct auth_header {
    uint8_t type;
    unsigned char sid[AUTH_SID_BYTES];
    uint64_t ctr, ref;
};
int auth_header_parse(const uint8_t *msg, size_t len, struct auth_header *h);

/*
 * Seals pt as a message of type (REQUEST/RESPONSE) with the next send
 * counter; ref is the request's counter for a RESPONSE, else 0. *out is
 * malloc'd. Returns the counter used (> 0) or a negative auth_result.
 */
int64_t auth_seal(struct auth_session *s, uint8_t type, uint64_t ref, const void *pt,
                  size_t ptlen, uint8_t **out, size_t *outlen);
/*
 * Opens a sealed message of the expected type. On success *pt (malloc'd,
 * NUL-terminated beyond *ptlen) and the header; the receive counter moves
 * forward only on success.
 */
int auth_open(struct auth_session *s, uint8_t type, const uint8_t *msg, size_t len,
              struct auth_header *h, uint8_t **pt, size_t *ptlen);

/* A clear ERROR message carrying text. */
int auth_error_msg(const unsigned char *sid, const char *text, uint8_t **out, size_t *outlen);

/* ---- client ---- */

struct auth_client {
    const struct auth_key *key;
    unsigned char cn[AUTH_NONCE_BYTES], sn[AUTH_NONCE_BYTES];
    int state; /* 0 fresh, 1 hello sent, 2 auth sent, 3 established */
    struct auth_session s;
};

void auth_client_init(struct auth_client *c, const struct auth_key *k);
/* Message 1. */
int auth_client_hello(struct auth_client *c, uint8_t **out, size_t *outlen);
/* Takes message 2, makes message 3. */
int auth_client_auth(struct auth_client *c, const uint8_t *in, size_t len, uint8_t **out,
                     size_t *outlen);
/* Takes message 4: checks the server's proof and opens the welcome body (*body malloc'd). */
int auth_client_welcome(struct auth_client *c, const uint8_t *in, size_t len, uint8_t **body,
                        size_t *bodylen);

/* ---- server ---- */

struct auth_pending {
    unsigned char sid[AUTH_SID_BYTES];
    unsigned char cn[AUTH_NONCE_BYTES], sn[AUTH_NONCE_BYTES];
    double created;
    bool used;
};

struct auth_server {
    const struct auth_key *key;
    struct auth_pending pending[AUTH_MAX_PENDING];
    struct auth_session sessions[AUTH_MAX_SESSIONS];
};

void auth_server_init(struct auth_server *sv, const struct auth_key *k);
/* Message 1 -> message 2. now: monotonic seconds. */
int auth_server_hello(struct auth_server *sv, const uint8_t *in, size_t len, double now,
                      uint8_t **out, size_t *outlen);
/*
 * Message 3 -> message 4 (welcome is the JSON body sealed into it). The
 * pending handshake is consumed whatever the outcome, so a proof cannot be
 * tried twice against one challenge.
 */
int auth_server_auth(struct auth_server *sv, const uint8_t *in, size_t len, double now,
                     const char *welcome, uint8_t **out, size_t *outlen);
/* The session a REQUEST names, or NULL (unknown or expired). Set its last_used once the
 * message opened: an unverified message must not keep a session alive. */
struct auth_session *auth_server_session(struct auth_server *sv, const uint8_t *in, size_t len,
                                         double now);

#endif
