/*
 * mm.core: the HTTP engine under the `mm` Lua module.
 *
 * It knows HTTP and libcurl, nothing about Mattermost: the Lua layer builds
 * URLs, headers and JSON, and decides about retries and pacing. One client
 * owns one curl multi handle and a pool of easy handles ("slots"). The Lua
 * layer drives it: `start` puts a transfer in flight, `wait` runs the
 * transfers until one of them is done and hands it back; `request` is a
 * start and a wait for that one transfer. Single calls and batches share
 * one connection cache, and a single call made while a batch is in flight
 * (from one of its callbacks) simply joins it.
 *
 * Every transfer ends in one shape: a response table {status, body,
 * content_type, head, captured, bytes, file}, or nil and an error table
 * {kind, message, curl_code}.
 *
 * Rules kept here: no process-global mutable state (only a pthread_once for
 * curl_global_init), no Lua code inside libcurl callbacks (body and headers
 * are collected into C buffers, or a file, and handed to Lua after the
 * transfer), every buffer libcurl borrows outlives the transfer, and every
 * curl_easy_setopt result is checked.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/signalfd.h>
#endif

#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>

#include "compat.h"

#define MM_CORE_VERSION "0.2.0"
#define MM_CLIENT_MT "mm.core.client"
#define MM_SIGNALS_MT "mm.core.signals"
#define MM_DEFAULT_MAX_BODY (8u * 1024u * 1024u)
#define MM_MAX_BODY_LIMIT 1e9
/* Response headers have their own cap: a Mattermost answer carries a
 * dozen short ones, whatever max_body is. */
#define MM_MAX_HEADERS (256u * 1024u)
#define MM_MAX_CONCURRENCY 1024
/* Header names a client may ask to have picked out of every answer. */
#define MM_MAX_CAPTURE 8
/* A slot keeps its buffers between transfers up to this size, to avoid
 * a malloc per call without pinning a large response in memory. */
#define MM_KEEP_BUFFER (64u * 1024u)
/* libcurl's receive buffer for transfers written to a file: fewer, larger
 * writes (curl(1) uses 100 KiB). */
#define MM_FILE_BUFFER (256L * 1024L)

#if defined(__GNUC__)
#define MM_EXPORT __attribute__((visibility("default")))
#else
#define MM_EXPORT
#endif

typedef struct {
  char *data;
  size_t len, cap;
} mm_buf;

/* Where a slot's response body goes. */
enum { OUT_MEMORY, OUT_UNDECIDED, OUT_FILE };

typedef struct mm_client mm_client;

typedef struct {
  CURL *easy;
  mm_client *client;  /* the owner (its memory never moves) */
  mm_buf body;
  mm_buf head;
  size_t max_body;
  int too_large;      /* a write callback refused a body or headers over their cap */
  int file_errno;     /* writing the output file failed with this errno */
  int state;          /* SLOT_FREE, SLOT_RUNNING or SLOT_DONE */
  CURLcode rc;        /* the result, once SLOT_DONE */
  int index;          /* position in the client's slot array */
  int tag_ref;        /* registry refs: the caller's tag, the body libcurl borrows */
  int body_ref;
  struct curl_slist *extra_headers; /* per-request list, freed after */
  /* response headers picked out by name: offsets into head */
  size_t cap_off[MM_MAX_CAPTURE], cap_len[MM_MAX_CAPTURE];
  /* output to a file: written to tmp_path, renamed to out_path when whole */
  int out_mode;
  int fd;
  char *out_path, *tmp_path;
  curl_off_t written;
  /* What the per-request options were last set to on this easy handle,
   * so that a request like the last one sets only its URL: a setopt
   * costs about 100 instructions, CUSTOMREQUEST a strdup besides
   * (bench/ANALYSIS.md). Unknown: NULL or -1. */
  const struct curl_slist *set_headers;
  int set_method;     /* method of a body-less request (a body is set every time) */
  int set_pipewait;
  int low_speed;      /* the low-speed check is on (a download to a file) */
  long set_timeout_ms, set_bufsize;
  curl_off_t set_maxfilesize;
  char errbuf[CURL_ERROR_SIZE];
} mm_slot;

enum { SLOT_FREE, SLOT_RUNNING, SLOT_DONE };

struct mm_client {
  CURLM *multi;
  CURL *tmpl;         /* configured once; slots are duplicated from it */
  mm_slot **slots;    /* each slot allocated alone: libcurl holds pointers to it */
  int nslots;
  int running;        /* slots in SLOT_RUNNING */
  int ndone;          /* slots in SLOT_DONE, not yet collected */
  size_t max_body;
  long timeout_ms;    /* per transfer, 0: none */
  unsigned long tmp_counter; /* makes temporary file names unique per client */
  struct curl_slist *headers;      /* default headers (hold the token) */
  struct curl_slist *headers_noct; /* defaults + "Content-Type:" (no body) */
  struct curl_slist *headers_body; /* defaults + the body headers */
  char *capture[MM_MAX_CAPTURE];   /* lower-case header names to pick out */
  size_t capture_len[MM_MAX_CAPTURE];
  int ncapture;
  int closed;
};

/* ------------------------------------------------------------------ */
/* libcurl global init, once per process, thread-safely.               */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
/* Written once under curl_once, read-only afterwards. */
static CURLcode curl_init_rc = CURLE_OK;

static void init_curl(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_ALL); }

/* ------------------------------------------------------------------ */
/* Buffers                                                             */

/* Makes room for n bytes in all, at once; 0 when out of memory. */
static int buf_reserve(mm_buf *b, size_t n) {
  char *d;
  if (b->cap >= n) return 1;
  d = realloc(b->data, n);
  if (d == NULL) return 0;
  b->data = d;
  b->cap = n;
  return 1;
}

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
/* Output files: written beside their target under a temporary name,   */
/* renamed over it only when the transfer is whole.                    */

/* Opens a new temporary file beside s->out_path; 0 or an errno. The
 * name is fresh (O_EXCL) and made from the client's counter, the time
 * and the slot, so concurrent downloads never share one; the mode
 * 0666 lets the umask decide, as for any file the user creates. Only
 * MM_TMP_BASE bytes of the target's name go into it: with the 37 bytes
 * added at most, it stays within NAME_MAX (255) whatever the target's
 * length. */
#define MM_TMP_BASE 200
/* The file_errno of a target that exists and is not a regular file. */
#define MM_NOT_REGULAR (-1)
static int out_open(mm_slot *s, unsigned long *counter) {
  const char *path = s->out_path, *slash = strrchr(path, '/');
  size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0, n = strlen(path) + 64;
  int attempt;
  struct stat st;
  /* Only a regular file (or nothing) is replaced: the rename would swap
   * a device, FIFO or socket node itself (root's /dev/null), and fail
   * on a directory only after the whole transfer. A symbolic link is
   * judged by what it points to. */
  if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) return S_ISDIR(st.st_mode) ? EISDIR : MM_NOT_REGULAR;
  s->tmp_path = malloc(n);
  if (s->tmp_path == NULL) return ENOMEM;
  for (attempt = 0; attempt < 100; attempt++) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(s->tmp_path, n, "%.*s.%.*s.mm-%lx%lx%x.part", (int)dirlen, path, MM_TMP_BASE, path + dirlen,
             ++*counter, (unsigned long)ts.tv_nsec, (unsigned)s->index);
    s->fd = open(s->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (s->fd >= 0) return 0;
    if (errno != EEXIST) break;
  }
  free(s->tmp_path);
  s->tmp_path = NULL;
  return errno;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Closes and removes the temporary file, if any (a failed transfer). */
static void out_discard(mm_slot *s) {
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
  if (s->tmp_path != NULL) unlink(s->tmp_path);
  free(s->tmp_path);
  s->tmp_path = NULL;
}

/* The transfer is whole: the temporary file becomes the target. Returns
 * 0 or an errno (then nothing is left behind). */
static int out_commit(mm_slot *s, unsigned long *counter) {
  int e = 0;
  struct stat st;
  if (s->fd < 0 && (e = out_open(s, counter)) != 0) return e; /* an empty body */
  /* A file replaced keeps its permissions: an export kept 0600 must not
   * become readable by all because the umask says 022. */
  if (stat(s->out_path, &st) == 0 && S_ISREG(st.st_mode) && fchmod(s->fd, st.st_mode & 07777) != 0) e = errno;
  if (close(s->fd) != 0 && e == 0) e = errno; /* NFS and full disks report here */
  s->fd = -1;
  if (e == 0 && rename(s->tmp_path, s->out_path) != 0) e = errno;
  if (e != 0) unlink(s->tmp_path);
  free(s->tmp_path);
  s->tmp_path = NULL;
  return e;
}

/* ------------------------------------------------------------------ */
/* libcurl callbacks: C only.                                          */

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  mm_slot *s = ud;
  size_t total = size * n;
  if (s->out_mode == OUT_UNDECIDED) {
    /* Only a 2xx answer is the file; an error body stays in memory. */
    long status = 0;
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    s->out_mode = (status >= 200 && status < 300) ? OUT_FILE : OUT_MEMORY;
  }
  if (s->out_mode == OUT_FILE) {
    if (s->fd < 0 && (s->file_errno = out_open(s, &s->client->tmp_counter)) != 0) return 0;
    if ((s->file_errno = write_all(s->fd, p, total)) != 0) return 0;
    s->written += (curl_off_t)total;
    return total;
  }
  if (total > s->max_body - s->body.len) {
    s->too_large = 1;
    return 0; /* makes libcurl stop with CURLE_WRITE_ERROR */
  }
  if (s->body.len == 0 && total >= 4096) {
    /* A large body: room for its announced length at once, rather than
     * doubling up to it (a 71.5 KB page of 200 jobs was copied over
     * 1 + 2 + ... + 64 KiB). Small answers skip the look-up. A failure
     * here is left to buf_append; a gzip body may outgrow its length. */
    curl_off_t announced = -1;
    curl_easy_getinfo(s->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &announced);
    if (announced > 0 && (curl_off_t)s->max_body >= announced) buf_reserve(&s->body, (size_t)announced);
  }
  return buf_append(&s->body, p, total) ? total : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  mm_slot *s = ud;
  const mm_client *c = s->client;
  size_t total = size * n, start = s->head.len;
  const char *colon;
  int i;
  /* A new status line starts a new header block (1xx, then the final). */
  if (total >= 5 && memcmp(p, "HTTP/", 5) == 0) {
    s->head.len = start = 0;
    memset(s->cap_len, 0, sizeof s->cap_len);
  }
  if (total > MM_MAX_HEADERS - s->head.len) {
    s->too_large = 1;
    return 0;
  }
  if (!buf_append(&s->head, p, total)) return 0;
  colon = c->ncapture > 0 ? memchr(p, ':', total) : NULL;
  for (i = 0; colon != NULL && i < c->ncapture; i++) {
    /* the lengths first: most lines are none of the names */
    if ((size_t)(colon - p) == c->capture_len[i] && curl_strnequal(p, c->capture[i], c->capture_len[i])) {
      size_t v = (size_t)(colon - p) + 1, e = total;
      while (v < e && (p[v] == ' ' || p[v] == '\t')) v++;
      while (e > v && (p[e - 1] == '\r' || p[e - 1] == '\n' || p[e - 1] == ' ' || p[e - 1] == '\t')) e--;
      s->cap_off[i] = start + v;
      s->cap_len[i] = e - v + 1; /* +1: an empty value is still a value */
    }
  }
  return total;
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
    size_t len = 0;
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
  return c;
}

/* Drops what the slot's request lent libcurl and the Lua values it kept,
 * so no pointer to freed memory stays in the easy handle. */
static void slot_clear(lua_State *L, mm_client *c, mm_slot *s) {
  if (s->state == SLOT_RUNNING) {
    curl_multi_remove_handle(c->multi, s->easy);
    c->running--;
  } else if (s->state == SLOT_DONE) {
    c->ndone--;
  }
  s->state = SLOT_FREE;
  if (s->extra_headers != NULL) {
    curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, NULL);
    s->set_headers = NULL;
    free_secret_list(s->extra_headers);
    s->extra_headers = NULL;
  }
  /* A body is a Lua string that libcurl must not keep pointing to. (A
   * body-less request's is a static "".) */
  if (s->body_ref != LUA_NOREF && s->easy != NULL) {
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, NULL);
    s->set_method = -1;
  }
  out_discard(s);
  free(s->out_path);
  s->out_path = NULL;
  s->out_mode = OUT_MEMORY;
  luaL_unref(L, LUA_REGISTRYINDEX, s->tag_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, s->body_ref);
  s->tag_ref = s->body_ref = LUA_NOREF;
}

static void client_release(lua_State *L, mm_client *c) {
  int i;
  if (c->closed) return;
  c->closed = 1;
  for (i = 0; i < c->nslots; i++) {
    mm_slot *s = c->slots[i];
    slot_clear(L, c, s);
    if (s->easy != NULL) curl_easy_cleanup(s->easy);
    buf_free(&s->body);
    buf_free(&s->head);
    free(s);
  }
  free(c->slots);
  c->slots = NULL;
  c->nslots = 0;
  for (i = 0; i < c->ncapture; i++) free(c->capture[i]);
  c->ncapture = 0;
  if (c->tmpl != NULL) curl_easy_cleanup(c->tmpl);
  if (c->multi != NULL) curl_multi_cleanup(c->multi);
  free_secret_list(c->headers);
  free_secret_list(c->headers_noct);
  free_secret_list(c->headers_body);
  c->tmpl = NULL;
  c->multi = NULL;
  c->headers = c->headers_noct = c->headers_body = NULL;
}

/* close, __gc and __close: transfers in flight are dropped (an output
 * file in progress is removed). Idempotent. */
static int client_close(lua_State *L) {
  client_release(L, luaL_checkudata(L, 1, MM_CLIENT_MT));
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

/* ------------------------------------------------------------------ */
/* Options: one table row per option, its type, and what it sets.      */

#define SETOPT(L, h, o, v)                                                               \
  do {                                                                                   \
    CURLcode rc_ = curl_easy_setopt((h), (o), (v));                                      \
    if (rc_ != CURLE_OK) luaL_error((L), "%s: %s", #o, curl_easy_strerror(rc_));         \
  } while (0)

/* Seconds to whole milliseconds, rounded up: libcurl reads 0 as "none". */
static long to_ms(double secs) {
  long ms = (long)(secs * 1000.0);
  return (double)ms < secs * 1000.0 ? ms + 1 : ms;
}

typedef enum { T_STRING, T_SECONDS, T_BYTES, T_BOOLEAN, T_LIST } opt_type;

typedef struct {
  const char *name;
  opt_type type;
  CURLoption curl; /* set directly on the template, or 0: handled below */
} mm_option;

static const mm_option OPTIONS[] = {
    {"timeout", T_SECONDS, 0},
    {"connect_timeout", T_SECONDS, CURLOPT_CONNECTTIMEOUT_MS},
    {"cafile", T_STRING, CURLOPT_CAINFO},
    {"capath", T_STRING, CURLOPT_CAPATH},
    {"sslcert", T_STRING, CURLOPT_SSLCERT},
    {"sslkey", T_STRING, CURLOPT_SSLKEY},
    {"proxy", T_STRING, CURLOPT_PROXY},
    {"noproxy", T_STRING, CURLOPT_NOPROXY},
    {"max_body", T_BYTES, 0},
    {"insecure", T_BOOLEAN, 0},
    {"compression", T_BOOLEAN, 0},
    {"headers", T_LIST, 0},
    {"body_headers", T_LIST, 0},
    {"capture", T_LIST, 0},
    {NULL, T_STRING, 0},
};

static const char *const TYPE_NAMES[] = {"string", "number of seconds", "number of bytes",
                                         "boolean", "table (array of strings)"};

/* Checks the value at the top of the stack against opt's type; raises
 * naming the option otherwise. Numbers must be in range. */
static void check_option(lua_State *L, const mm_option *o) {
  int t = lua_type(L, -1), ok;
  switch (o->type) {
    case T_STRING: ok = t == LUA_TSTRING; break;
    case T_BOOLEAN: ok = t == LUA_TBOOLEAN; break;
    case T_LIST: ok = t == LUA_TTABLE; break;
    default: {
      double d = lua_tonumber(L, -1);
      ok = t == LUA_TNUMBER &&
           (o->type == T_SECONDS ? d > 0 && d <= 86400 : d >= 1 && d <= MM_MAX_BODY_LIMIT);
    }
  }
  if (!ok) luaL_error(L, "option '%s' must be a %s%s", o->name, TYPE_NAMES[o->type],
                      o->type == T_SECONDS ? " above 0 (at most 86400)"
                      : o->type == T_BYTES ? " from 1 to 1e9" : "");
}

static const mm_option *find_option(lua_State *L) {
  const mm_option *o;
  if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "option names must be strings");
  for (o = OPTIONS; o->name != NULL; o++)
    if (strcmp(o->name, lua_tostring(L, -2)) == 0) return o;
  luaL_error(L, "unknown option '%s'", lua_tostring(L, -2));
  return NULL;
}

/* The lower-case names of the `capture` option. */
static void set_capture(lua_State *L, mm_client *c, int idx) {
  int i, n = (int)lua_rawlen(L, idx);
  if (n > MM_MAX_CAPTURE) luaL_error(L, "option 'capture' takes at most %d names", MM_MAX_CAPTURE);
  for (i = 1; i <= n; i++) {
    const char *name;
    char *copy, *p;
    lua_rawgeti(L, idx, i);
    name = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (name == NULL || name[0] == '\0' || strpbrk(name, ": \t\r\n") != NULL)
      luaL_error(L, "option 'capture': #%d is not a header name", i);
    copy = strdup(name);
    if (copy == NULL) luaL_error(L, "out of memory");
    for (p = copy; *p; p++)
      if (*p >= 'A' && *p <= 'Z') *p = (char)(*p + 32);
    c->capture_len[c->ncapture] = strlen(copy);
    c->capture[c->ncapture++] = copy;
    lua_pop(L, 1);
  }
}

/* Applies the options table at index 1 to the client and its template.
 * Header lists are built afterwards (they depend on each other). */
static void configure(lua_State *L, mm_client *c) {
  CURL *h = c->tmpl;
  int compression = 1;
  lua_pushnil(L);
  while (lua_next(L, 1) != 0) {
    const mm_option *o = find_option(L);
    check_option(L, o);
    if (o->curl != 0) {
      if (o->type == T_SECONDS)
        SETOPT(L, h, o->curl, to_ms(lua_tonumber(L, -1)));
      else
        SETOPT(L, h, o->curl, lua_tostring(L, -1));
    } else if (strcmp(o->name, "timeout") == 0) {
      c->timeout_ms = to_ms(lua_tonumber(L, -1));
    } else if (strcmp(o->name, "max_body") == 0) {
      c->max_body = (size_t)lua_tonumber(L, -1);
    } else if (strcmp(o->name, "insecure") == 0 && lua_toboolean(L, -1)) {
      SETOPT(L, h, CURLOPT_SSL_VERIFYPEER, 0L);
      SETOPT(L, h, CURLOPT_SSL_VERIFYHOST, 0L);
    } else if (strcmp(o->name, "compression") == 0) {
      compression = lua_toboolean(L, -1);
    } else if (strcmp(o->name, "capture") == 0) {
      set_capture(L, c, lua_gettop(L));
    }
    lua_pop(L, 1);
  }
  /* libcurl sends Accept-Encoding and decodes the body. */
  if (compression) SETOPT(L, h, CURLOPT_ACCEPT_ENCODING, "gzip");
}

/* The array option `key` appended to list (unchanged when absent). */
static struct curl_slist *opt_headers(lua_State *L, const char *key, struct curl_slist *list,
                                      int *has_ct) {
  lua_getfield(L, 1, key);
  if (!lua_isnil(L, -1)) list = header_list(L, lua_gettop(L), key, list, has_ct);
  lua_pop(L, 1);
  return list;
}

/*
 * core.new{ headers = {"Name: value", ...}, body_headers = {...},
 *           capture = {"header-name", ...},
 *           timeout = s, connect_timeout = s, max_body = bytes,
 *           cafile, capath, sslcert, sslkey, insecure, proxy, noproxy,
 *           compression = true }
 * `headers` go with every request, `body_headers` also with every request
 * that has a body. `capture` names response headers picked out into each
 * response's `captured` table. Unknown options and wrong types raise.
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
  SETOPT(L, c->tmpl, CURLOPT_NOSIGNAL, 1L);
  SETOPT(L, c->tmpl, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
  SETOPT(L, c->tmpl, CURLOPT_PROTOCOLS_STR, "http,https");
  SETOPT(L, c->tmpl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
  SETOPT(L, c->tmpl, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
  SETOPT(L, c->tmpl, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  SETOPT(L, c->tmpl, CURLOPT_TCP_KEEPALIVE, 1L);
  SETOPT(L, c->tmpl, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
  configure(L, c);

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
  lua_settop(L, 2);
  return 1;
}

/* ------------------------------------------------------------------ */
/* Slots                                                               */

/* A free slot, made if there is none (up to MM_MAX_CONCURRENCY). */
static mm_slot *slot_free(lua_State *L, mm_client *c) {
  mm_slot *s = NULL;
  int i;
  for (i = 0; i < c->nslots; i++)
    if (c->slots[i]->state == SLOT_FREE) {
      s = c->slots[i];
      break;
    }
  if (s == NULL) {
    mm_slot **slots;
    if (c->nslots >= MM_MAX_CONCURRENCY)
      luaL_error(L, "too many transfers in flight (at most %d)", MM_MAX_CONCURRENCY);
    slots = realloc(c->slots, (size_t)(c->nslots + 1) * sizeof *slots);
    if (slots == NULL) luaL_error(L, "out of memory");
    c->slots = slots;
    s = calloc(1, sizeof *s);
    if (s == NULL) luaL_error(L, "out of memory");
    s->client = c;
    s->index = c->nslots;
    s->fd = -1;
    s->tag_ref = s->body_ref = LUA_NOREF;
    s->set_method = s->set_pipewait = -1;
    s->set_timeout_ms = s->set_bufsize = -1;
    s->set_maxfilesize = -1;
    slots[c->nslots++] = s;
    /* libcurl keeps 4 idle connections per transfer still added, so as a
     * batch winds down it closes all but a few, and the next batch
     * connects again. Keep as many as this client ever had in flight. */
    if (c->nslots > 4) {
      CURLMcode mc = curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)c->nslots);
      if (mc != CURLM_OK) luaL_error(L, "CURLMOPT_MAXCONNECTS: %s", curl_multi_strerror(mc));
    }
  }
  if (s->easy == NULL) {
    s->easy = curl_easy_duphandle(c->tmpl);
    if (s->easy == NULL) luaL_error(L, "cannot create a curl handle");
    SETOPT(L, s->easy, CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(L, s->easy, CURLOPT_WRITEDATA, s);
    SETOPT(L, s->easy, CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(L, s->easy, CURLOPT_HEADERDATA, s);
    SETOPT(L, s->easy, CURLOPT_ERRORBUFFER, s->errbuf);
    SETOPT(L, s->easy, CURLOPT_PRIVATE, (char *)s);
  }
  return s;
}

static const char *const methods[] = {"GET", "HEAD", "DELETE", "POST", "PUT", "PATCH", NULL};
enum { M_GET, M_HEAD, M_DELETE, M_POST, M_PUT, M_PATCH };

static int method_index(const char *name) {
  int i;
  for (i = 0; name != NULL && methods[i] != NULL; i++)
    if (strcmp(methods[i], name) == 0) return i;
  return -1;
}

/* The request options table: { output = path, timeout = s }. */
static void request_options(lua_State *L, int oi, mm_slot *s, long *timeout_ms) {
  lua_pushnil(L);
  while (lua_next(L, oi) != 0) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
    if (strcmp(k, "output") == 0) {
      size_t len;
      const char *p = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
      if (p == NULL || len == 0 || strlen(p) != len)
        luaL_error(L, "request option 'output' must be a file name");
      free(s->out_path);
      s->out_path = strdup(p);
      if (s->out_path == NULL) luaL_error(L, "out of memory");
    } else if (strcmp(k, "timeout") == 0) {
      double d = lua_tonumber(L, -1);
      if (lua_type(L, -1) != LUA_TNUMBER || !(d > 0 && d <= 86400))
        luaL_error(L, "request option 'timeout' must be a number of seconds above 0");
      *timeout_ms = to_ms(d);
    } else {
      luaL_error(L, "unknown request option '%s'", k);
    }
    lua_pop(L, 1);
  }
}

/* The options of a request other than its URL, each set only when it
 * differs from what the slot's handle has (see mm_slot). timeout_ms is
 * the request's own timeout, 0 when it has none. */
static void set_request_options(lua_State *L, const mm_client *c, mm_slot *s, int m, const char *body,
                                size_t body_len, int post_mode, long timeout_ms, int https) {
  CURL *h = s->easy;
  const struct curl_slist *headers = s->extra_headers ? s->extra_headers
                                     : body != NULL   ? c->headers_body
                                     : post_mode      ? c->headers_noct
                                                      : c->headers;
  /* A body-less request's method options come back the same each time;
   * a body is a new string each time. */
  int method = body != NULL ? -1 : m;
  curl_off_t maxfilesize = s->out_path ? (curl_off_t)0 : (curl_off_t)s->max_body;
  long bufsize = s->out_path ? MM_FILE_BUFFER : (long)CURL_MAX_WRITE_SIZE;

  /* Waiting for a possible HTTP/2 connection pays only where ALPN can
   * offer it; on http:// it would hold every new transfer of a fresh
   * client until the first answer shows HTTP/1.1. */
  if (s->set_pipewait != https) {
    SETOPT(L, h, CURLOPT_PIPEWAIT, (long)https);
    s->set_pipewait = https;
  }
  if (s->set_headers != headers) {
    SETOPT(L, h, CURLOPT_HTTPHEADER, headers);
    s->set_headers = headers;
  }
  if (method < 0 || s->set_method != method) {
    s->set_method = -1; /* unknown until all are set */
    if (post_mode) {
      SETOPT(L, h, CURLOPT_POST, 1L);
      SETOPT(L, h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
      SETOPT(L, h, CURLOPT_POSTFIELDS, body ? body : "");
      SETOPT(L, h, CURLOPT_CUSTOMREQUEST, m == M_POST ? NULL : methods[m]);
    } else {
      SETOPT(L, h, CURLOPT_HTTPGET, 1L);
      SETOPT(L, h, CURLOPT_NOBODY, m == M_HEAD ? 1L : 0L);
      SETOPT(L, h, CURLOPT_CUSTOMREQUEST, m == M_DELETE ? methods[m] : NULL);
    }
    s->set_method = method;
  }
  /* A download of gigabytes takes as long as it takes: unless the
   * request sets a timeout of its own, it fails only when no byte came
   * for the client's timeout (libcurl's low-speed check). */
  if (!s->out_path && timeout_ms == 0) timeout_ms = c->timeout_ms;
  if (s->set_timeout_ms != timeout_ms) {
    SETOPT(L, h, CURLOPT_TIMEOUT_MS, timeout_ms);
    s->set_timeout_ms = timeout_ms;
  }
  if (s->low_speed != (s->out_path != NULL)) {
    SETOPT(L, h, CURLOPT_LOW_SPEED_LIMIT, s->out_path ? 1L : 0L);
    SETOPT(L, h, CURLOPT_LOW_SPEED_TIME, s->out_path && c->timeout_ms > 0 ? (c->timeout_ms + 999) / 1000 : 0L);
    s->low_speed = s->out_path != NULL;
  }
  /* A body for memory is refused at once when its announced length is
   * over the cap; a file has no cap but the disk. */
  if (s->set_maxfilesize != maxfilesize) {
    SETOPT(L, h, CURLOPT_MAXFILESIZE_LARGE, maxfilesize);
    s->set_maxfilesize = maxfilesize;
  }
  if (s->set_bufsize != bufsize) {
    SETOPT(L, h, CURLOPT_BUFFERSIZE, bufsize);
    s->set_bufsize = bufsize;
  }
}

/*
 * Prepares slot s for a request whose method, url, body (nil or a
 * string), headers (nil or an array of extra header lines) and options
 * (nil or a table) are at the given stack indexes, and puts it in flight.
 * The body string is kept referenced until the transfer is over: libcurl
 * borrows it.
 */
static void slot_start(lua_State *L, mm_client *c, mm_slot *s, int mi, int ui, int bi, int hi, int oi) {
  const char *url, *body = NULL;
  size_t body_len = 0;
  int m, has_ct = 0, post_mode;
  long timeout_ms = 0;
  CURLMcode mc;
  CURL *h = s->easy;

  slot_clear(L, c, s); /* what a start that raised half-way may have left */

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

  if (!lua_isnoneornil(L, oi)) {
    luaL_checktype(L, oi, LUA_TTABLE);
    request_options(L, oi, s, &timeout_ms);
  }
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
  memset(s->cap_len, 0, sizeof s->cap_len);
  s->errbuf[0] = '\0';
  s->too_large = 0;
  s->file_errno = 0;
  s->written = 0;
  s->max_body = c->max_body;
  s->out_mode = s->out_path ? OUT_UNDECIDED : OUT_MEMORY;

  SETOPT(L, h, CURLOPT_URL, url);
  set_request_options(L, c, s, m, body, body_len, post_mode, timeout_ms, curl_strnequal(url, "https:", 6));

  /* The body stays referenced for as long as libcurl borrows it. */
  if (body != NULL) {
    lua_pushvalue(L, bi);
    s->body_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  mc = curl_multi_add_handle(c->multi, h);
  if (mc != CURLM_OK) luaL_error(L, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
  s->state = SLOT_RUNNING;
  c->running++;
}

/* ------------------------------------------------------------------ */
/* Results                                                             */

/* Whether the answer's header block ended (its blank line came). */
static int head_complete(const mm_buf *h) {
  return (h->len >= 2 && memcmp(h->data + h->len - 2, "\n\n", 2) == 0) ||
         (h->len >= 4 && memcmp(h->data + h->len - 4, "\r\n\r\n", 4) == 0);
}

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
      return s->too_large ? "too_large" : s->file_errno ? "file" : "network";
    case CURLE_FILESIZE_EXCEEDED:
      return "too_large";
    case CURLE_OUT_OF_MEMORY:
      /* libcurl's own cap on one header line (CURL_MAX_HTTP_HEADER)
       * reports as out of memory: "Avoided giant realloc for header" in
       * old versions, no message at all from the dynbuf code of later
       * ones (8.6 has CURLE_TOO_LARGE). An allocation failing while the
       * header block is still coming is taken for it. */
      return strstr(s->errbuf, "header") != NULL || (s->errbuf[0] == '\0' && !head_complete(&s->head))
                 ? "too_large"
                 : "curl";
#if LIBCURL_VERSION_NUM >= 0x080600
    case CURLE_TOO_LARGE:
      return "too_large";
#endif
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
    case CURLE_UNSUPPORTED_PROTOCOL:
      /* Before the request went out, the URL's scheme; after it, an
       * answer that is not HTTP ("Received HTTP/0.9 when not allowed",
       * "Unsupported HTTP version in response"). */
      curl_easy_getinfo(s->easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer_us);
      return pretransfer_us == 0 ? "url" : "protocol";
    case CURLE_URL_MALFORMAT:
      return "url";
    case CURLE_ABORTED_BY_CALLBACK:
      return "aborted";
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

/* Pushes nil and the error table {kind, message, curl_code} of a failed
 * transfer. */
static int push_failure(lua_State *L, const mm_slot *s, CURLcode rc) {
  const char *kind = error_kind(rc, s);
  lua_pushnil(L);
  lua_createtable(L, 0, 3);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  if (s->too_large)
    lua_pushfstring(L, "response larger than the limit (max_body %d bytes, headers %d bytes)",
                    (int)s->max_body, (int)MM_MAX_HEADERS);
  else if (s->file_errno)
    lua_pushfstring(L, "cannot write %s: %s", s->out_path,
                    s->file_errno == MM_NOT_REGULAR ? "not a regular file" : strerror(s->file_errno));
  else if (rc == CURLE_FILESIZE_EXCEEDED)
    lua_pushfstring(L, "response larger than the limit (max_body %d bytes)", (int)s->max_body);
  else if (strcmp(kind, "too_large") == 0) /* libcurl's cap on one header line */
    lua_pushfstring(L, "response header line longer than libcurl's limit (%d bytes)", (int)CURL_MAX_HTTP_HEADER);
  else if (rc == CURLE_ABORTED_BY_CALLBACK)
    lua_pushliteral(L, "transfer aborted before its answer was complete");
  else
    lua_pushstring(L, s->errbuf[0] ? s->errbuf : curl_easy_strerror(rc));
  lua_setfield(L, -2, "message");
  lua_pushinteger(L, (lua_Integer)rc);
  lua_setfield(L, -2, "curl_code");
  return 2;
}

/* Pushes the response table of a completed transfer. */
static int push_response(lua_State *L, mm_client *c, mm_slot *s) {
  long status = 0;
  char *ctype = NULL;
  int i, any = 0;
  curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(s->easy, CURLINFO_CONTENT_TYPE, &ctype);
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, (lua_Integer)status);
  lua_setfield(L, -2, "status");
  if (s->out_mode == OUT_FILE) {
    lua_pushinteger(L, (lua_Integer)s->written);
    lua_setfield(L, -2, "bytes");
    lua_pushstring(L, s->out_path);
    lua_setfield(L, -2, "file");
  } else {
    lua_pushlstring(L, s->body.data ? s->body.data : "", s->body.len);
    lua_setfield(L, -2, "body");
  }
  if (ctype != NULL) {
    lua_pushstring(L, ctype);
    lua_setfield(L, -2, "content_type");
  }
  lua_pushlstring(L, s->head.data ? s->head.data : "", s->head.len);
  lua_setfield(L, -2, "head");
  for (i = 0; i < c->ncapture; i++) {
    if (s->cap_len[i] == 0) continue;
    if (!any) lua_createtable(L, 0, c->ncapture);
    any = 1;
    lua_pushlstring(L, s->head.data + s->cap_off[i], s->cap_len[i] - 1);
    lua_setfield(L, -2, c->capture[i]);
  }
  if (any) lua_setfield(L, -2, "captured");
  return 1;
}

/* Pushes the result of a done slot (response, or nil and error), and
 * frees the slot. An output file is committed here: a 2xx answer whose
 * file cannot be renamed into place is a failure too. */
static int collect(lua_State *L, mm_client *c, mm_slot *s) {
  int n;
  CURLcode rc = s->rc;
  if (s->out_path != NULL && rc == CURLE_OK) {
    long status = 0;
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300) {
      s->out_mode = OUT_FILE;
      if ((s->file_errno = out_commit(s, &c->tmp_counter)) != 0) rc = CURLE_WRITE_ERROR;
    }
  }
  n = rc == CURLE_OK ? push_response(L, c, s) : push_failure(L, s, rc);
  buf_reset(&s->body);
  slot_clear(L, c, s);
  return n;
}

/* ------------------------------------------------------------------ */
/* The transfer engine                                                 */

/* Runs libcurl once and marks the transfers it finished as done. */
static void step(lua_State *L, mm_client *c) {
  int running = 0, left = 0;
  CURLMsg *msg;
  CURLMcode mc = curl_multi_perform(c->multi, &running);
  if (mc != CURLM_OK) luaL_error(L, "curl_multi_perform: %s", curl_multi_strerror(mc));
  while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
    char *priv = NULL;
    mm_slot *s;
    if (msg->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
    s = (mm_slot *)(void *)priv;
    s->rc = msg->data.result;
    /* msg is invalid once the handle is removed: rc and s are copies */
    curl_multi_remove_handle(c->multi, s->easy);
    s->state = SLOT_DONE;
    c->running--;
    c->ndone++;
  }
}

/* Waits for socket activity for at most ms milliseconds, also waking
 * when fd (if >= 0) becomes readable. Returns 1 when fd is readable. */
static int poll_once(lua_State *L, mm_client *c, int ms, int fd) {
  struct curl_waitfd extra;
  CURLMcode mc;
  extra.fd = fd;
  extra.events = CURL_WAIT_POLLIN;
  extra.revents = 0;
  mc = curl_multi_poll(c->multi, fd >= 0 ? &extra : NULL, fd >= 0 ? 1u : 0u, ms, NULL);
  /* A signal interrupting the poll is not an error: the caller decides. */
  if (mc != CURLM_OK && !(mc == CURLM_UNRECOVERABLE_POLL && errno == EINTR))
    luaL_error(L, "curl_multi_poll: %s", curl_multi_strerror(mc));
  return fd >= 0 && (extra.revents & CURL_WAIT_POLLIN) != 0;
}

static double monotime(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static mm_slot *first_done(mm_client *c, mm_slot *want) {
  int i;
  if (want != NULL) return want->state == SLOT_DONE ? want : NULL;
  if (c->ndone == 0) return NULL;
  for (i = 0; i < c->nslots; i++)
    if (c->slots[i]->state == SLOT_DONE) return c->slots[i];
  return NULL;
}

/* Runs transfers until `want` (or, when NULL, any transfer) is done, the
 * timeout (seconds, < 0: none) passes, or fd becomes readable. Returns
 * the done slot or NULL. */
static mm_slot *run_until(lua_State *L, mm_client *c, mm_slot *want, double timeout, int fd) {
  double deadline = timeout >= 0 ? monotime() + timeout : 0;
  mm_slot *s = first_done(c, want);
  while (s == NULL && c->running > 0) {
    int ms = 1000;
    step(L, c);
    if ((s = first_done(c, want)) != NULL) break;
    if (timeout >= 0) {
      double left = deadline - monotime();
      if (left <= 0) break;
      if (left < 1.0) ms = (int)(left * 1000.0) + 1;
    }
    if (poll_once(L, c, ms, fd)) break;
  }
  return s;
}

/* client:request(method, url [, body [, headers [, opts]]])
 *   -> response | nil, error
 * opts: { output = file name, timeout = seconds }. Other transfers in
 * flight (a batch this call was made from) go on meanwhile. */
static int client_request(lua_State *L) {
  mm_client *c = check_client(L);
  mm_slot *s = slot_free(L, c);
  lua_settop(L, 6);
  if (s->state != SLOT_FREE) return luaL_error(L, "internal error: slot in use");
  slot_start(L, c, s, 2, 3, 4, 5, 6);
  run_until(L, c, s, -1, -1);
  return collect(L, c, s);
}

/* client:start(tag, method, url [, body [, headers [, opts]]]) -> slot
 * Puts a transfer in flight; `wait` hands it back with its tag. The slot
 * number names it for `wait_for` and `progress` while it runs. */
static int client_start(lua_State *L) {
  mm_client *c = check_client(L);
  mm_slot *s;
  lua_settop(L, 7);
  if (lua_isnil(L, 2)) return luaL_argerror(L, 2, "a tag is required");
  s = slot_free(L, c);
  slot_start(L, c, s, 3, 4, 5, 6, 7);
  lua_pushvalue(L, 2);
  s->tag_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushinteger(L, s->index + 1);
  return 1;
}

/* The running or done slot numbered at idx (from `start`). */
static mm_slot *check_slot(lua_State *L, mm_client *c, int idx) {
  lua_Integer i = luaL_checkinteger(L, idx);
  if (i < 1 || i > c->nslots || c->slots[i - 1]->state == SLOT_FREE)
    luaL_argerror(L, idx, "no such transfer");
  return c->slots[i - 1];
}

/* The optional timeout at idx: seconds, or -1 when nil (no timeout). A
 * negative or NaN one raises: taken for "none", it would wait on. */
static double opt_timeout(lua_State *L, int idx) {
  double t;
  if (lua_isnoneornil(L, idx)) return -1;
  t = luaL_checknumber(L, idx);
  luaL_argcheck(L, t >= 0, idx, "must be a non-negative number of seconds");
  return t;
}

static int signals_fd(lua_State *L, int idx);

/* client:wait_for(slot [, timeout [, signals]]) -> as wait, for that
 * transfer only (others finishing meanwhile stay for `wait`). */
static int client_wait_for(lua_State *L) {
  mm_client *c = check_client(L);
  mm_slot *s = check_slot(L, c, 2);
  double timeout = opt_timeout(L, 3);
  int fd = lua_isnoneornil(L, 4) ? -1 : signals_fd(L, 4);
  if (run_until(L, c, s, timeout, fd) == NULL) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->tag_ref);
  return 1 + collect(L, c, s);
}

/* client:progress(slot) -> bytes of the body received so far, and the
 * total announced (nil when unknown). */
static int client_progress(lua_State *L) {
  mm_client *c = check_client(L);
  mm_slot *s = check_slot(L, c, 2);
  curl_off_t now = 0, total = -1;
  curl_easy_getinfo(s->easy, CURLINFO_SIZE_DOWNLOAD_T, &now);
  curl_easy_getinfo(s->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &total);
  lua_pushinteger(L, (lua_Integer)now);
  if (total >= 0)
    lua_pushinteger(L, (lua_Integer)total);
  else
    lua_pushnil(L);
  return 2;
}


/* client:wait([timeout [, signals]]) -> tag, response | tag, nil, error
 *                                    | nothing (timeout, signal, idle)
 * Hands back one finished transfer, waiting at most `timeout` seconds
 * (none: until one finishes) and no longer than a signal of the
 * `signals` watcher takes to arrive. */
static int client_wait(lua_State *L) {
  mm_client *c = check_client(L);
  double timeout = opt_timeout(L, 2);
  int fd = lua_isnoneornil(L, 3) ? -1 : signals_fd(L, 3);
  mm_slot *s = run_until(L, c, NULL, timeout, fd);
  if (s == NULL) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->tag_ref);
  return 1 + collect(L, c, s);
}

static void slot_abort(mm_client *c, mm_slot *s) {
  if (s->state != SLOT_RUNNING) return;
  curl_multi_remove_handle(c->multi, s->easy);
  s->rc = CURLE_ABORTED_BY_CALLBACK;
  s->state = SLOT_DONE;
  c->running--;
  c->ndone++;
}

/* client:abort([slot]): every transfer in flight (or the one numbered
 * slot) ends now; `wait` hands each back with an error of kind "aborted". */
static int client_abort(lua_State *L) {
  mm_client *c = check_client(L);
  int i;
  if (!lua_isnoneornil(L, 2)) {
    slot_abort(c, check_slot(L, c, 2));
    return 0;
  }
  for (i = 0; i < c->nslots; i++) slot_abort(c, c->slots[i]);
  return 0;
}

/* client:pending() -> transfers in flight, finished ones not yet handed back */
static int client_pending(lua_State *L) {
  mm_client *c = check_client(L);
  lua_pushinteger(L, c->running);
  lua_pushinteger(L, c->ndone);
  return 2;
}

/* ------------------------------------------------------------------ */
/* Signals: a watcher blocks the signals it names and makes them        */
/* readable on a signalfd, which `wait` and `sleep` also watch, so a    */
/* program can stop cleanly between transfers. For programs (the CLI),  */
/* not libraries: the signal mask is the calling thread's.              */

typedef struct {
  int fd;
  int caught;      /* first signal read, 0 if none */
  int count;       /* signals read in all */
  sigset_t added;  /* the signals this watcher blocked (to unblock on close) */
} mm_signals;

static const struct {
  const char *name;
  int sig;
} SIGNALS[] = {{"INT", SIGINT}, {"TERM", SIGTERM}, {"HUP", SIGHUP}, {"QUIT", SIGQUIT}, {NULL, 0}};

static const char *signal_name(int sig) {
  int i;
  for (i = 0; SIGNALS[i].name != NULL; i++)
    if (SIGNALS[i].sig == sig) return SIGNALS[i].name;
  return "?";
}

static int signals_fd(lua_State *L, int idx) {
  mm_signals *w = luaL_checkudata(L, idx, MM_SIGNALS_MT);
  if (w->fd < 0) luaL_argerror(L, idx, "closed signal watcher");
  return w->fd;
}

static void signals_release(mm_signals *w) {
  if (w->fd < 0) return;
  close(w->fd);
  w->fd = -1;
  pthread_sigmask(SIG_UNBLOCK, &w->added, NULL);
}

/* core.signals{"INT", "TERM", ...} -> watcher */
static int core_signals(lua_State *L) {
#ifdef __linux__
  mm_signals *w;
  sigset_t want, old;
  int i, n, j;
  luaL_checktype(L, 1, LUA_TTABLE);
  sigemptyset(&want);
  n = (int)lua_rawlen(L, 1);
  for (i = 1; i <= n; i++) {
    const char *name;
    lua_rawgeti(L, 1, i);
    name = lua_tostring(L, -1);
    for (j = 0; name != NULL && SIGNALS[j].name != NULL; j++)
      if (strcmp(SIGNALS[j].name, name) == 0) break;
    if (name == NULL || SIGNALS[j].name == NULL)
      return luaL_argerror(L, 1, "signal names must be among INT, TERM, HUP, QUIT");
    sigaddset(&want, SIGNALS[j].sig);
    lua_pop(L, 1);
  }
  w = lua_newuserdata(L, sizeof *w);
  memset(w, 0, sizeof *w);
  w->fd = -1;
  luaL_getmetatable(L, MM_SIGNALS_MT);
  lua_setmetatable(L, -2);
  sigemptyset(&w->added);
  pthread_sigmask(SIG_BLOCK, NULL, &old);
  for (j = 0; SIGNALS[j].name != NULL; j++)
    if (sigismember(&want, SIGNALS[j].sig) && !sigismember(&old, SIGNALS[j].sig))
      sigaddset(&w->added, SIGNALS[j].sig);
  w->fd = signalfd(-1, &want, SFD_NONBLOCK | SFD_CLOEXEC);
  if (w->fd < 0) return luaL_error(L, "signalfd: %s", strerror(errno));
  pthread_sigmask(SIG_BLOCK, &want, NULL);
  return 1;
#else
  return luaL_error(L, "signal watchers need Linux (signalfd)");
#endif
}

/* watcher:caught() -> name of the first signal caught (or nil), count.
 * Reads whatever arrived since the last call. */
static int signals_caught(lua_State *L) {
  mm_signals *w = luaL_checkudata(L, 1, MM_SIGNALS_MT);
#ifdef __linux__
  struct signalfd_siginfo si;
  while (w->fd >= 0 && read(w->fd, &si, sizeof si) == (ssize_t)sizeof si) {
    if (w->caught == 0) w->caught = (int)si.ssi_signo;
    w->count++;
  }
#endif
  if (w->caught == 0) return 0;
  lua_pushstring(L, signal_name(w->caught));
  lua_pushinteger(L, w->count);
  return 2;
}

static int signals_close(lua_State *L) {
  signals_release(luaL_checkudata(L, 1, MM_SIGNALS_MT));
  return 0;
}

/* core.ignore_sigpipe(): writes to a closed pipe fail with EPIPE instead
 * of killing the process, so a program can report them. For programs
 * (the CLI): the disposition is process-wide. */
static int core_ignore_sigpipe(lua_State *L) {
  (void)L;
  signal(SIGPIPE, SIG_IGN);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Small utilities the Lua layer needs and plain Lua lacks.            */

/* core.isatty(fd) -> whether file descriptor fd is a terminal. */
static int core_isatty(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  lua_pushboolean(L, fd >= 0 && fd <= 1024 && isatty((int)fd));
  return 1;
}

/* core.sleep(seconds [, signals]) -> true, or false when a signal of the
 * watcher arrived first. */
static int core_sleep(lua_State *L) {
  double secs = luaL_checknumber(L, 1);
  luaL_argcheck(L, secs >= 0 && secs < 1e9, 1, "must be a non-negative number of seconds");
  if (!lua_isnoneornil(L, 2)) {
    struct pollfd p;
    double deadline = monotime() + secs, left = secs;
    p.fd = signals_fd(L, 2);
    p.events = POLLIN;
    do {
      int ms = left > 1e6 ? 1000000000 : (int)(left * 1000.0) + (left > 0 ? 1 : 0);
      p.revents = 0;
      if (poll(&p, 1, ms) > 0 && (p.revents & POLLIN)) {
        lua_pushboolean(L, 0);
        return 1;
      }
      left = deadline - monotime();
    } while (left > 0);
  } else {
    struct timespec ts;
    ts.tv_sec = (time_t)secs;
    ts.tv_nsec = (long)((secs - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.is_lower_alnum(v [, n]) -> whether v is a string of only the
 * bytes a-z and 0-9 (and n of them, when n is given). Every call with an
 * id checks one: Lua's pattern "^[a-z0-9]+$" costs about 100
 * instructions a byte, this about 3 (bench/ANALYSIS.md). */
static int core_is_lower_alnum(lua_State *L) {
  size_t len = 0, i;
  const char *p = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &len) : NULL;
  int ok = p != NULL && len > 0 && (lua_isnoneornil(L, 2) || (lua_Integer)len == luaL_checkinteger(L, 2));
  for (i = 0; ok && i < len; i++) ok = (p[i] >= 'a' && p[i] <= 'z') || (p[i] >= '0' && p[i] <= '9');
  lua_pushboolean(L, ok);
  return 1;
}

static int core_monotime(lua_State *L) {
  lua_pushnumber(L, (lua_Number)monotime());
  return 1;
}

static const luaL_Reg client_methods[] = {
    {"request", client_request},   {"start", client_start},   {"wait", client_wait},
    {"wait_for", client_wait_for}, {"progress", client_progress}, {"abort", client_abort},
    {"pending", client_pending},   {"close", client_close},   {NULL, NULL},
};

static const luaL_Reg client_meta[] = {
    {"__gc", client_close},
    {"__close", client_close},
    {"__tostring", client_tostring},
    {NULL, NULL},
};

static const luaL_Reg signals_methods[] = {
    {"caught", signals_caught},
    {"close", signals_close},
    {NULL, NULL},
};

static const luaL_Reg core_funcs[] = {
    {"new", core_new},
    {"sleep", core_sleep},
    {"monotime", core_monotime},
    {"is_lower_alnum", core_is_lower_alnum},
    {"parse_headers", core_parse_headers},
    {"signals", core_signals},
    {"ignore_sigpipe", core_ignore_sigpipe},
    {"isatty", core_isatty},
    {NULL, NULL},
};

static void new_class(lua_State *L, const char *name, const luaL_Reg *funcs, lua_CFunction gc) {
  if (luaL_newmetatable(L, name)) {
    if (gc != NULL) {
      lua_pushcfunction(L, gc);
      lua_setfield(L, -2, "__gc");
    }
    lua_newtable(L);
    luaL_setfuncs(L, funcs, 0);
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
  }
}

MM_EXPORT int luaopen_mm_core(lua_State *L);

MM_EXPORT int luaopen_mm_core(lua_State *L) {
  curl_version_info_data *info;
  pthread_once(&curl_once, init_curl);

  new_class(L, MM_CLIENT_MT, client_methods, NULL);
  luaL_setfuncs(L, client_meta, 0);
  new_class(L, MM_SIGNALS_MT, signals_methods, signals_close);
  lua_pop(L, 2);

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
