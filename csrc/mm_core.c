/*
 * mm.core: the HTTP engine under the `mm` Lua module.
 *
 * It knows HTTP and libcurl, nothing about Mattermost: the Lua layer builds
 * URLs, headers and JSON, and decides about retries. One client owns one
 * curl multi handle and a small pool of easy handles ("slots"); a single
 * request is a batch of one, so single calls and batches share one
 * connection cache and connections are kept alive across both.
 *
 * Rules kept here: no process-global mutable state (only a pthread_once for
 * curl_global_init), no Lua code inside libcurl callbacks (body and headers
 * are collected into C buffers and handed to Lua after the transfer), and
 * every buffer libcurl borrows outlives the transfer.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>

#include "compat.h"

#define MM_CORE_VERSION "0.1.0"
#define MM_CLIENT_MT "mm.core.client"
#define MM_DEFAULT_MAX_BODY (8u * 1024u * 1024u)
#define MM_MAX_BODY_LIMIT 1e9
/* Response headers have their own cap: a Mattermost answer carries a
 * dozen short ones, whatever max_body is. */
#define MM_MAX_HEADERS (256u * 1024u)
#define MM_MAX_CONCURRENCY 1024
/* A slot keeps its buffers between transfers up to this size, to avoid
 * a malloc per call without pinning a large response in memory. */
#define MM_KEEP_BUFFER (64u * 1024u)

#if defined(__GNUC__)
#define MM_EXPORT __attribute__((visibility("default")))
#else
#define MM_EXPORT
#endif

typedef struct {
  char *data;
  size_t len, cap;
} mm_buf;

typedef struct {
  CURL *easy;
  mm_buf body;
  mm_buf head;
  size_t max_body;
  int too_large;      /* a write callback refused a body or headers over their cap */
  int attached;       /* currently added to the multi handle */
  int index;          /* position in the client's slot array */
  int request;        /* index of the request it carries (1-based) */
  struct curl_slist *extra_headers; /* per-request list, freed after */
  char errbuf[CURL_ERROR_SIZE];
} mm_slot;

typedef struct {
  CURLM *multi;
  CURL *tmpl;         /* configured once; slots are duplicated from it */
  mm_slot **slots;    /* each slot allocated alone: libcurl holds pointers to it */
  int nslots;
  size_t max_body;
  struct curl_slist *headers;      /* default headers (hold the token) */
  struct curl_slist *headers_noct; /* defaults + "Content-Type:" (no body) */
  struct curl_slist *headers_body; /* defaults + the body headers */
  int closed;
  int busy;           /* transfers running: Lua callbacks may be on the stack */
  int close_pending;  /* close() called from a callback: release when done */
} mm_client;

/* ------------------------------------------------------------------ */
/* libcurl global init, once per process, thread-safely.               */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
/* Written once under curl_once, read-only afterwards. */
static CURLcode curl_init_rc = CURLE_OK;

static void init_curl(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_ALL); }

/* ------------------------------------------------------------------ */
/* Buffers                                                             */

static int buf_append(mm_buf *b, const char *p, size_t n) {
  if (b->cap - b->len < n) {
    size_t cap = b->cap ? b->cap : 1024;
    char *d;
    while (cap - b->len < n) {
      if (cap > ((size_t)-1) / 2) return 0;
      cap *= 2;
    }
    d = realloc(b->data, cap);
    if (d == NULL) return 0;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 1;
}

static void buf_free(mm_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

static void buf_reset(mm_buf *b) {
  if (b->cap > MM_KEEP_BUFFER)
    buf_free(b);
  else
    b->len = 0;
}

/* ------------------------------------------------------------------ */
/* libcurl callbacks: C only.                                          */

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  mm_slot *s = ud;
  size_t total = size * n;
  if (total > s->max_body - s->body.len) {
    s->too_large = 1;
    return 0; /* makes libcurl stop with CURLE_WRITE_ERROR */
  }
  return buf_append(&s->body, p, total) ? total : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  mm_slot *s = ud;
  size_t total = size * n;
  /* A new status line starts a new header block (1xx, then the final). */
  if (total >= 5 && memcmp(p, "HTTP/", 5) == 0) s->head.len = 0;
  if (total > MM_MAX_HEADERS - s->head.len) {
    s->too_large = 1;
    return 0;
  }
  return buf_append(&s->head, p, total) ? total : 0;
}

/* ------------------------------------------------------------------ */
/* Header lists. The default headers carry the token: our copies are   */
/* wiped before they are freed (best effort: the caller's Lua strings  */
/* and libcurl's request buffers are out of our reach).                */

static void wipe(char *p) {
  volatile char *v = p;
  while (*v) *v++ = 0;
}

static void free_secret_list(struct curl_slist *l) {
  struct curl_slist *i;
  for (i = l; i != NULL; i = i->next) wipe(i->data);
  curl_slist_free_all(l);
}

/* A header line must be "Name: value" with no control characters, so
 * nothing a caller passes can split a header or a request. The message
 * names the position only: the line may hold a token. */
static const char *bad_header(const char *h, size_t len) {
  size_t i, colon = 0;
  for (i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)h[i];
    if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return "contains a control character";
    if (ch == ':' && colon == 0) colon = i;
  }
  if (colon == 0) return "is not of the form 'Name: value'";
  for (i = 0; i < colon; i++)
    if (h[i] == ' ' || h[i] == '\t') return "has white space in its name";
  return NULL;
}

/* Appends the header lines of the array at idx to list; sets *has_ct if
 * one is a Content-Type. On error frees list and raises. */
static struct curl_slist *header_list(lua_State *L, int idx, const char *what,
                                      struct curl_slist *list, int *has_ct) {
  int i, n = (int)lua_rawlen(L, idx);
  for (i = 1; i <= n; i++) {
    size_t len;
    const char *h, *why;
    struct curl_slist *next;
    lua_rawgeti(L, idx, i);
    h = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    why = h == NULL ? "is not a string" : bad_header(h, len);
    if (why != NULL) {
      free_secret_list(list);
      luaL_error(L, "%s header #%d %s", what, i, why);
    }
    if (has_ct != NULL && len >= 13 && curl_strnequal(h, "content-type:", 13)) *has_ct = 1;
    next = curl_slist_append(list, h);
    lua_pop(L, 1);
    if (next == NULL) {
      free_secret_list(list);
      luaL_error(L, "out of memory");
    }
    list = next;
  }
  return list;
}

/* A copy of src followed by `extra` (if not NULL); NULL when out of memory. */
static struct curl_slist *list_copy(const struct curl_slist *src, const char *extra) {
  struct curl_slist *dst = NULL, *next;
  for (; src != NULL; src = src->next) {
    next = curl_slist_append(dst, src->data);
    if (next == NULL) goto fail;
    dst = next;
  }
  if (extra == NULL) return dst;
  next = curl_slist_append(dst, extra);
  if (next != NULL) return next;
fail:
  free_secret_list(dst);
  return NULL;
}

/* ------------------------------------------------------------------ */
/* Client lifecycle                                                    */

static mm_client *check_client(lua_State *L) {
  mm_client *c = luaL_checkudata(L, 1, MM_CLIENT_MT);
  if (c->closed) luaL_error(L, "attempt to use a closed mm client");
  if (c->busy) luaL_error(L, "mm client is busy: it cannot be used from its own callback");
  return c;
}

static void slot_free(mm_client *c, mm_slot *s) {
  if (s->easy != NULL) {
    if (s->attached) curl_multi_remove_handle(c->multi, s->easy);
    curl_easy_cleanup(s->easy);
  }
  free_secret_list(s->extra_headers);
  buf_free(&s->body);
  buf_free(&s->head);
  free(s);
}

static void client_release(mm_client *c) {
  int i;
  if (c->closed) return;
  c->closed = 1;
  for (i = 0; i < c->nslots; i++) slot_free(c, c->slots[i]);
  free(c->slots);
  c->slots = NULL;
  c->nslots = 0;
  if (c->tmpl != NULL) curl_easy_cleanup(c->tmpl);
  if (c->multi != NULL) curl_multi_cleanup(c->multi);
  free_secret_list(c->headers);
  free_secret_list(c->headers_noct);
  free_secret_list(c->headers_body);
  c->tmpl = NULL;
  c->multi = NULL;
  c->headers = c->headers_noct = c->headers_body = NULL;
}

/* close, __gc and __close. Called from a callback of this client's own
 * transfers, it only marks the client: it is released when they end. */
static int client_close(lua_State *L) {
  mm_client *c = luaL_checkudata(L, 1, MM_CLIENT_MT);
  if (c->busy)
    c->close_pending = 1;
  else
    client_release(c);
  return 0;
}

static int client_tostring(lua_State *L) {
  mm_client *c = luaL_checkudata(L, 1, MM_CLIENT_MT);
  if (c->closed)
    lua_pushliteral(L, "mm.core.client (closed)");
  else
    lua_pushfstring(L, "mm.core.client (%p)", (void *)c);
  return 1;
}

/* Options table helpers: absent (nil) means "leave libcurl's default". */
static const char *opt_string(lua_State *L, const char *key) {
  const char *s;
  lua_getfield(L, 1, key);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "option '%s' must be a string", key);
  s = lua_tostring(L, -1);
  lua_pop(L, 1); /* still referenced by the options table */
  return s;
}

static int opt_number(lua_State *L, const char *key, double max, double *out) {
  lua_getfield(L, 1, key);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  if (lua_type(L, -1) != LUA_TNUMBER) luaL_error(L, "option '%s' must be a number", key);
  *out = lua_tonumber(L, -1);
  lua_pop(L, 1);
  if (!(*out > 0) || *out > max) luaL_error(L, "option '%s' is out of range", key);
  return 1;
}

/* Seconds to whole milliseconds, rounded up: libcurl reads 0 as "none". */
static long to_ms(double secs) {
  long ms = (long)(secs * 1000.0);
  return (double)ms < secs * 1000.0 ? ms + 1 : ms;
}

static int opt_boolean(lua_State *L, const char *key) {
  int b;
  lua_getfield(L, 1, key);
  b = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return b;
}

#define SETOPT(h, o, v)                                                         \
  do {                                                                          \
    CURLcode rc_ = curl_easy_setopt((h), (o), (v));                             \
    if (rc_ != CURLE_OK) return luaL_error(L, "%s: %s", #o, curl_easy_strerror(rc_)); \
  } while (0)

static int configure_template(lua_State *L, mm_client *c) {
  CURL *h = c->tmpl;
  const char *s;
  double d;
  SETOPT(h, CURLOPT_NOSIGNAL, 1L);
  SETOPT(h, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
  SETOPT(h, CURLOPT_PROTOCOLS_STR, "http,https");
  SETOPT(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
  SETOPT(h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
  SETOPT(h, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  SETOPT(h, CURLOPT_TCP_KEEPALIVE, 1L);
  SETOPT(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
  if (opt_number(L, "timeout", 86400, &d)) SETOPT(h, CURLOPT_TIMEOUT_MS, to_ms(d));
  if (opt_number(L, "connect_timeout", 86400, &d)) SETOPT(h, CURLOPT_CONNECTTIMEOUT_MS, to_ms(d));
  if (opt_number(L, "max_body", MM_MAX_BODY_LIMIT, &d)) c->max_body = (size_t)d;
  if ((s = opt_string(L, "cafile")) != NULL) SETOPT(h, CURLOPT_CAINFO, s);
  if ((s = opt_string(L, "capath")) != NULL) SETOPT(h, CURLOPT_CAPATH, s);
  if ((s = opt_string(L, "sslcert")) != NULL) SETOPT(h, CURLOPT_SSLCERT, s);
  if ((s = opt_string(L, "sslkey")) != NULL) SETOPT(h, CURLOPT_SSLKEY, s);
  if ((s = opt_string(L, "proxy")) != NULL) SETOPT(h, CURLOPT_PROXY, s);
  if ((s = opt_string(L, "noproxy")) != NULL) SETOPT(h, CURLOPT_NOPROXY, s);
  if (opt_boolean(L, "insecure")) {
    SETOPT(h, CURLOPT_SSL_VERIFYPEER, 0L);
    SETOPT(h, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  return 0;
}

/* The array option `key` appended to list (NULL when absent). */
static struct curl_slist *opt_headers(lua_State *L, const char *key, struct curl_slist *list,
                                      int *has_ct) {
  lua_getfield(L, 1, key);
  if (!lua_isnil(L, -1)) {
    if (!lua_istable(L, -1)) {
      free_secret_list(list);
      luaL_error(L, "option '%s' must be a table", key);
    }
    list = header_list(L, lua_gettop(L), key, list, has_ct);
  }
  lua_pop(L, 1);
  return list;
}

/*
 * core.new{ headers = {"Name: value", ...}, body_headers = {...},
 *           timeout = s, connect_timeout = s, max_body = bytes,
 *           cafile, capath, sslcert, sslkey, insecure, proxy, noproxy }
 * `headers` go with every request, `body_headers` also with every request
 * that has a body. Option names are validated by the Lua layer; here only
 * their types and ranges.
 */
static int core_new(lua_State *L) {
  mm_client *c;
  struct curl_slist *list;
  int has_ct = 0;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (curl_init_rc != CURLE_OK)
    return luaL_error(L, "curl_global_init failed: %s", curl_easy_strerror(curl_init_rc));

  /* The metatable comes first, so that __gc releases whatever the rest of
   * this function acquires before an error (release copes with NULLs). */
  c = lua_newuserdata(L, sizeof *c);
  memset(c, 0, sizeof *c);
  luaL_getmetatable(L, MM_CLIENT_MT);
  lua_setmetatable(L, -2);
  c->max_body = MM_DEFAULT_MAX_BODY;

  c->multi = curl_multi_init();
  c->tmpl = curl_easy_init();
  if (c->multi == NULL || c->tmpl == NULL) return luaL_error(L, "cannot create a curl handle");
  configure_template(L, c);

  /* Never wait for "100 Continue": the server does not need it. */
  list = curl_slist_append(NULL, "Expect:");
  if (list == NULL) return luaL_error(L, "out of memory");
  c->headers = opt_headers(L, "headers", list, NULL);
  /* Without "Content-Type:", a body-less PUT or POST gets libcurl's form type. */
  c->headers_noct = list_copy(c->headers, "Content-Type:");
  if (c->headers_noct == NULL) return luaL_error(L, "out of memory");
  list = list_copy(c->headers, NULL);
  if (list == NULL) return luaL_error(L, "out of memory");
  c->headers_body = opt_headers(L, "body_headers", list, &has_ct);
  if (!has_ct) {
    list = curl_slist_append(c->headers_body, "Content-Type:");
    if (list == NULL) return luaL_error(L, "out of memory");
    c->headers_body = list;
  }
  return 1;
}

/* ------------------------------------------------------------------ */
/* Slots                                                               */

static mm_slot *slot_get(lua_State *L, mm_client *c, int i) {
  mm_slot *s;
  while (i >= c->nslots) {
    mm_slot **slots = realloc(c->slots, (size_t)(c->nslots + 1) * sizeof *slots);
    if (slots == NULL) luaL_error(L, "out of memory");
    c->slots = slots;
    slots[c->nslots] = calloc(1, sizeof **slots);
    if (slots[c->nslots] == NULL) luaL_error(L, "out of memory");
    slots[c->nslots]->index = c->nslots;
    c->nslots++;
  }
  s = c->slots[i];
  if (s->easy == NULL) {
    s->easy = curl_easy_duphandle(c->tmpl);
    if (s->easy == NULL) luaL_error(L, "cannot create a curl handle");
    curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(s->easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(s->easy, CURLOPT_HEADERDATA, s);
    curl_easy_setopt(s->easy, CURLOPT_ERRORBUFFER, s->errbuf);
    curl_easy_setopt(s->easy, CURLOPT_PRIVATE, (char *)s);
  }
  return s;
}

/* Takes slot s out of the multi handle and drops what its request lent
 * libcurl, so no pointer to freed memory stays in the easy handle. */
static void slot_detach(mm_client *c, mm_slot *s) {
  if (s->attached) curl_multi_remove_handle(c->multi, s->easy);
  s->attached = 0;
  if (s->extra_headers != NULL) {
    curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, NULL);
    free_secret_list(s->extra_headers);
    s->extra_headers = NULL;
  }
  curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, NULL);
}

/* After a Lua error in the middle of transfers: every slot out. */
static void slots_detach(mm_client *c) {
  int i;
  for (i = 0; i < c->nslots; i++)
    if (c->slots[i]->easy != NULL) slot_detach(c, c->slots[i]);
}

static const char *const methods[] = {"GET", "HEAD", "DELETE", "POST", "PUT", "PATCH", NULL};
enum { M_GET, M_HEAD, M_DELETE, M_POST, M_PUT, M_PATCH };

static int method_index(const char *name) {
  int i;
  for (i = 0; name != NULL && methods[i] != NULL; i++)
    if (strcmp(methods[i], name) == 0) return i;
  return -1;
}

/*
 * Prepares slot s for a request whose method, url, headers (nil or an
 * array of extra header lines) and body (nil or a string) are at the given
 * stack indexes. The caller keeps the body string referenced until the
 * transfer is over: libcurl borrows it.
 */
static void slot_prepare(lua_State *L, mm_client *c, mm_slot *s, int mi, int ui, int hi, int bi) {
  const char *url, *body = NULL;
  size_t body_len = 0;
  int m, has_ct = 0, post_mode;
  CURL *h = s->easy;

  m = method_index(lua_tostring(L, mi));
  if (m < 0) luaL_error(L, "request method must be one of GET HEAD DELETE POST PUT PATCH");
  if (lua_type(L, ui) != LUA_TSTRING) luaL_error(L, "request url must be a string");
  url = lua_tostring(L, ui);
  if (lua_type(L, bi) == LUA_TSTRING)
    body = lua_tolstring(L, bi, &body_len);
  else if (!lua_isnoneornil(L, bi))
    luaL_error(L, "request body must be a string");
  if (body != NULL && (m == M_GET || m == M_HEAD))
    luaL_error(L, "a %s request cannot have a body", methods[m]);
  post_mode = body != NULL || m >= M_POST;

  if (!lua_isnoneornil(L, hi)) {
    struct curl_slist *list;
    if (!lua_istable(L, hi)) luaL_error(L, "request headers must be a table");
    list = list_copy(c->headers, NULL);
    if (list == NULL) luaL_error(L, "out of memory");
    list = header_list(L, hi, "request", list, &has_ct);
    if (post_mode && !has_ct) {
      struct curl_slist *next = curl_slist_append(list, "Content-Type:");
      if (next == NULL) {
        free_secret_list(list);
        luaL_error(L, "out of memory");
      }
      list = next;
    }
    s->extra_headers = list;
  }

  buf_reset(&s->body);
  buf_reset(&s->head);
  s->errbuf[0] = '\0';
  s->too_large = 0;
  s->max_body = c->max_body;

  curl_easy_setopt(h, CURLOPT_URL, url);
  /* Waiting for a possible HTTP/2 connection pays only where ALPN can
   * offer it; on http:// it would hold every new transfer of a fresh
   * client until the first answer shows HTTP/1.1. */
  curl_easy_setopt(h, CURLOPT_PIPEWAIT, curl_strnequal(url, "https:", 6) ? 1L : 0L);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER,
                   s->extra_headers ? s->extra_headers
                   : body != NULL   ? c->headers_body
                   : post_mode      ? c->headers_noct
                                    : c->headers);
  if (post_mode) {
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, m == M_POST ? NULL : methods[m]);
  } else {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(h, CURLOPT_NOBODY, m == M_HEAD ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, m == M_DELETE ? methods[m] : NULL);
  }
}

/* ------------------------------------------------------------------ */
/* Results                                                             */

static const char *error_kind(CURLcode rc, const mm_slot *s) {
  curl_off_t pretransfer_us = 0;
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
      /* Not the connect time: on a reused connection it is 0 although
       * the request went out. Before "pretransfer" nothing was sent. */
      curl_easy_getinfo(s->easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer_us);
      return pretransfer_us == 0 ? "connect_timeout" : "timeout";
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
      return "connect";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_USE_SSL_FAILED:
      return "tls";
    case CURLE_WRITE_ERROR:
      return s->too_large ? "too_large" : "network";
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return "network";
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
      return "protocol";
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return "url";
    default:
      return "curl";
  }
}

/* Parses a header block into {lower-case name = value}; repeated headers
 * are joined with ", " as HTTP allows. */
static void push_headers(lua_State *L, const char *p, size_t len) {
  const char *end = p + len;
  lua_createtable(L, 0, 8);
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *line_end = eol ? eol : end, *colon, *v, *ve;
    if (line_end > p && line_end[-1] == '\r') line_end--;
    colon = memchr(p, ':', (size_t)(line_end - p));
    if (colon != NULL && colon > p) {
      luaL_Buffer nb;
      const char *k;
      v = colon + 1;
      while (v < line_end && (*v == ' ' || *v == '\t')) v++;
      ve = line_end;
      while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      luaL_buffinit(L, &nb);
      for (k = p; k < colon; k++) {
        char ch = *k;
        luaL_addchar(&nb, (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch);
      }
      luaL_pushresult(&nb);
      lua_pushvalue(L, -1);
      lua_rawget(L, -3);
      if (lua_isstring(L, -1)) {
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, (size_t)(ve - v));
        lua_concat(L, 3);
      } else {
        lua_pop(L, 1);
        lua_pushlstring(L, v, (size_t)(ve - v));
      }
      lua_rawset(L, -3);
    }
    p = eol ? eol + 1 : end;
  }
}

/* core.parse_headers(block) -> {lower-case name = value}. Responses carry
 * their header block raw: the usual caller needs only the content type
 * (given apart), so the table is built only when asked for. */
static int core_parse_headers(lua_State *L) {
  size_t len;
  const char *p = luaL_checklstring(L, 1, &len);
  push_headers(L, p, len);
  return 1;
}

/* Pushes the error triple for a failed transfer: kind, message, code. */
static void push_failure(lua_State *L, const mm_slot *s, CURLcode rc) {
  lua_pushstring(L, error_kind(rc, s));
  if (s->too_large)
    lua_pushfstring(L, "response larger than the limit (max_body %d bytes, headers %d bytes)",
                    (int)s->max_body, (int)MM_MAX_HEADERS);
  else
    lua_pushstring(L, s->errbuf[0] ? s->errbuf : curl_easy_strerror(rc));
  lua_pushinteger(L, (lua_Integer)rc);
}

/* Pushes status, body, content type (or nil) and the raw header block. */
static void push_response(lua_State *L, mm_slot *s) {
  long status = 0;
  char *ctype = NULL;
  curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(s->easy, CURLINFO_CONTENT_TYPE, &ctype);
  lua_pushinteger(L, (lua_Integer)status);
  lua_pushlstring(L, s->body.data ? s->body.data : "", s->body.len);
  if (ctype != NULL)
    lua_pushstring(L, ctype);
  else
    lua_pushnil(L);
  lua_pushlstring(L, s->head.data ? s->head.data : "", s->head.len);
}

/* result table: {status=, body=, content_type=, head=} or
 * {kind=, message=, curl_code=} */
static void push_result_table(lua_State *L, mm_slot *s, CURLcode rc) {
  lua_createtable(L, 0, 4);
  if (rc == CURLE_OK) {
    push_response(L, s);
    lua_setfield(L, -5, "head");
    lua_setfield(L, -4, "content_type");
    lua_setfield(L, -3, "body");
    lua_setfield(L, -2, "status");
  } else {
    push_failure(L, s, rc);
    lua_setfield(L, -4, "curl_code");
    lua_setfield(L, -3, "message");
    lua_setfield(L, -2, "kind");
  }
}

/* ------------------------------------------------------------------ */
/* The transfer loop                                                   */

static void attach(lua_State *L, mm_client *c, mm_slot *s) {
  CURLMcode mc = curl_multi_add_handle(c->multi, s->easy);
  if (mc != CURLM_OK) luaL_error(L, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
  s->attached = 1;
}

/*
 * Drives the attached transfers until none is left. Each completed one is
 * detached, then given to done(L, c, slot, rc, ud), which may call back
 * into Lua (no transfer callback is running then) and may start the
 * slot's next transfer, returning 1 if it did.
 */
typedef int (*done_fn)(lua_State *L, mm_client *c, mm_slot *s, CURLcode rc, void *ud);

static void pump(lua_State *L, mm_client *c, int in_flight, done_fn done, void *ud) {
  while (in_flight > 0) {
    int running = 0, left = 0;
    CURLMsg *msg;
    CURLMcode mc = curl_multi_perform(c->multi, &running);
    if (mc != CURLM_OK) luaL_error(L, "curl_multi_perform: %s", curl_multi_strerror(mc));
    while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
      char *priv = NULL;
      mm_slot *s;
      CURLcode rc;
      if (msg->msg != CURLMSG_DONE) continue;
      rc = msg->data.result;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
      s = (mm_slot *)(void *)priv;
      slot_detach(c, s); /* msg is invalid from here on: rc and s are copies */
      in_flight--;
      if (done(L, c, s, rc, ud)) {
        in_flight++;
        running = 1; /* perform again before polling: the new handle is idle */
      }
    }
    if (in_flight > 0 && running > 0) {
      mc = curl_multi_poll(c->multi, NULL, 0, 1000, NULL);
      if (mc != CURLM_OK) luaL_error(L, "curl_multi_poll: %s", curl_multi_strerror(mc));
    }
  }
}

/*
 * Runs body(L) with the stack as it is (the method's arguments), in
 * protected mode with the client marked busy: a Lua error anywhere (a
 * callback, out of memory) leaves no handle attached and no client stuck
 * busy, and a close() from a callback takes effect once transfers end.
 */
static int run_protected(lua_State *L, mm_client *c, lua_CFunction body) {
  int n = lua_gettop(L), rc;
  lua_pushcfunction(L, body);
  lua_insert(L, 1);
  c->busy = 1;
  rc = lua_pcall(L, n, LUA_MULTRET, 0);
  c->busy = 0;
  if (rc != 0) slots_detach(c);
  if (c->close_pending) client_release(c);
  if (rc != 0) return lua_error(L);
  return lua_gettop(L);
}

/* client:request(method, url [, headers [, body]])
 *   -> status, body, content_type, header_block
 *    | nil, kind, message, curl_code */
static int single_done(lua_State *L, mm_client *c, mm_slot *s, CURLcode rc, void *ud) {
  (void)c;
  (void)ud;
  if (rc == CURLE_OK) {
    push_response(L, s);
  } else {
    lua_pushnil(L);
    push_failure(L, s, rc);
  }
  buf_reset(&s->body);
  return 0;
}

static int request_body(lua_State *L) {
  mm_client *c = luaL_checkudata(L, 1, MM_CLIENT_MT);
  mm_slot *s;
  lua_settop(L, 5); /* the body (5) stays here, referenced, until the end */
  s = slot_get(L, c, 0);
  slot_prepare(L, c, s, 2, 3, 4, 5);
  attach(L, c, s);
  pump(L, c, 1, single_done, NULL);
  return 4;
}

static int client_request(lua_State *L) {
  return run_protected(L, check_client(L), request_body);
}

/* client:request_many(requests, concurrency [, on_done])
 *   -> results, one table per request in input order.
 * on_done(i, result), if given, is called after each completion, between
 * transfers, and then the results table is left empty (the callback has
 * them: no need to hold every body until the end). An error in on_done
 * aborts the batch; the client stays usable. */
enum { MANY_REQS = 2, MANY_CB = 4, MANY_RESULTS = 5, MANY_ANCHORS = 6 };

typedef struct {
  int next, n, has_cb;
} many_state;

/* Starts request #st->next on slot s. Its body is anchored in a table
 * indexed by slot, so it lives as long as the transfer whatever the
 * caller does to its requests table meanwhile. */
static void many_start(lua_State *L, mm_client *c, mm_slot *s, many_state *st) {
  int i = st->next++, t;
  lua_rawgeti(L, MANY_REQS, i);
  if (!lua_istable(L, -1)) luaL_error(L, "request #%d is not a table", i);
  t = lua_gettop(L);
  lua_getfield(L, t, "method");
  lua_getfield(L, t, "url");
  lua_getfield(L, t, "headers");
  lua_getfield(L, t, "body");
  slot_prepare(L, c, s, t + 1, t + 2, t + 3, t + 4);
  lua_rawseti(L, MANY_ANCHORS, s->index + 1); /* the body, or nil */
  lua_pop(L, 4);
  s->request = i;
  attach(L, c, s);
}

static int many_done(lua_State *L, mm_client *c, mm_slot *s, CURLcode rc, void *ud) {
  many_state *st = ud;
  push_result_table(L, s, rc);
  buf_reset(&s->body);
  if (st->has_cb) {
    lua_pushvalue(L, MANY_CB);
    lua_pushinteger(L, s->request);
    lua_pushvalue(L, -3);
    lua_call(L, 2, 0);
    lua_pop(L, 1);
  } else {
    lua_rawseti(L, MANY_RESULTS, s->request);
  }
  if (c->close_pending || st->next > st->n) return 0;
  many_start(L, c, s, st);
  return 1;
}

static int request_many_body(lua_State *L) {
  mm_client *c = luaL_checkudata(L, 1, MM_CLIENT_MT);
  many_state st;
  int limit = (int)lua_tointeger(L, 3), i;
  st.next = 1;
  st.n = (int)lua_rawlen(L, MANY_REQS);
  st.has_cb = !lua_isnoneornil(L, MANY_CB);
  lua_settop(L, MANY_CB);
  lua_createtable(L, st.has_cb ? 0 : st.n, 0); /* MANY_RESULTS */
  lua_newtable(L);                             /* MANY_ANCHORS */
  if (limit > st.n) limit = st.n;
  for (i = 0; i < limit; i++) many_start(L, c, slot_get(L, c, i), &st);
  pump(L, c, limit, many_done, &st);
  /* Past slot 0 (single calls), free what a large batch left in buffers. */
  for (i = 1; i < c->nslots && !c->close_pending; i++) {
    buf_free(&c->slots[i]->body);
    buf_free(&c->slots[i]->head);
  }
  lua_settop(L, MANY_RESULTS);
  return 1;
}

static int client_request_many(lua_State *L) {
  mm_client *c = check_client(L);
  lua_Integer limit;
  luaL_checktype(L, MANY_REQS, LUA_TTABLE);
  limit = luaL_checkinteger(L, 3);
  luaL_argcheck(L, limit >= 1 && limit <= MM_MAX_CONCURRENCY, 3,
                "concurrency must be between 1 and 1024");
  if (!lua_isnoneornil(L, MANY_CB)) luaL_checktype(L, MANY_CB, LUA_TFUNCTION);
  lua_settop(L, MANY_CB);
  return run_protected(L, c, request_many_body);
}

/* ------------------------------------------------------------------ */
/* Small utilities the Lua layer needs and plain Lua lacks.            */

static int core_sleep(lua_State *L) {
  double secs = luaL_checknumber(L, 1);
  struct timespec ts;
  luaL_argcheck(L, secs >= 0 && secs < 1e9, 1, "must be a non-negative number of seconds");
  ts.tv_sec = (time_t)secs;
  ts.tv_nsec = (long)((secs - (double)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
  }
  return 0;
}

static int core_monotime(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  return 1;
}

static const luaL_Reg client_methods[] = {
    {"request", client_request},
    {"request_many", client_request_many},
    {"close", client_close},
    {NULL, NULL},
};

static const luaL_Reg client_meta[] = {
    {"__gc", client_close},
    {"__close", client_close},
    {"__tostring", client_tostring},
    {NULL, NULL},
};

static const luaL_Reg core_funcs[] = {
    {"new", core_new},
    {"sleep", core_sleep},
    {"monotime", core_monotime},
    {"parse_headers", core_parse_headers},
    {NULL, NULL},
};

MM_EXPORT int luaopen_mm_core(lua_State *L);

MM_EXPORT int luaopen_mm_core(lua_State *L) {
  curl_version_info_data *info;
  pthread_once(&curl_once, init_curl);

  if (luaL_newmetatable(L, MM_CLIENT_MT)) {
    luaL_setfuncs(L, client_meta, 0);
    luaL_newlib(L, client_methods);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "mm.core.client");
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);

  luaL_newlib(L, core_funcs);
  lua_pushliteral(L, MM_CORE_VERSION);
  lua_setfield(L, -2, "_VERSION");
  info = curl_version_info(CURLVERSION_NOW);
  lua_pushstring(L, info->version);
  lua_setfield(L, -2, "curl_version");
  lua_pushinteger(L, MM_MAX_CONCURRENCY);
  lua_setfield(L, -2, "max_concurrency");
  lua_pushnumber(L, MM_MAX_BODY_LIMIT);
  lua_setfield(L, -2, "max_body_limit");
  return 1;
}
