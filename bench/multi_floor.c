/*
 * bench/multi_floor.c: the batch floor for `mm` regen_tokens.
 *
 * Plain C over curl_multi: N regen_token requests (the same wire bytes as
 * bench/floor.c and `mm`) with at most CONCURRENCY in flight, each of
 * CONCURRENCY easy handles reused for the next request as soon as it
 * finishes, connections kept alive in the multi handle's cache. Collects
 * each body and checks nothing but the transfer result and status code.
 *
 * Usage: multi_floor BASE_URL N CONCURRENCY [mm-options]
 * Environment: BENCH_TOKEN (bearer token), BENCH_UA (User-Agent value).
 * With "mm-options", each handle also gets the connection options that
 * mm.core sets (HTTP_VERSION_2TLS, TCP_KEEPALIVE, FOLLOWLOCATION off,
 * PROTOCOLS_STR, and PIPEWAIT for https:// only, as since commit 5e134d3):
 * a diagnostic, to tell the cost of those options from the cost of mm.
 * Prints one line: "ok=N fail=N seconds=S" (from creating the multi handle
 * to the last completion, connection set-up included).
 */
#define _POSIX_C_SOURCE 200809L
#include "floor_common.h"

typedef struct {
  CURL *easy;
  buf body;
  char url[512];
} slot;

static void start(CURLM *m, slot *s, const char *base, long i) {
  snprintf(s->url, sizeof s->url, "%s/api/v4/commands/bench%021ld/regen_token", base, i % 1000);
  curl_easy_setopt(s->easy, CURLOPT_URL, s->url);
  s->body.len = 0;
  curl_multi_add_handle(m, s->easy);
}

int main(int argc, char **argv) {
  const char *base;
  long n, conc, i, next = 0, ok = 0, fail = 0, in_flight = 0;
  int mm_options;
  double t0;
  struct curl_slist *hdrs;
  slot *slots;
  CURLM *m;

  if (argc < 4) {
    fprintf(stderr, "usage: multi_floor BASE_URL N CONCURRENCY [mm-options]\n");
    return 2;
  }
  base = argv[1];
  n = strtol(argv[2], NULL, 10);
  conc = strtol(argv[3], NULL, 10);
  mm_options = argc > 4 && strcmp(argv[4], "mm-options") == 0;
  if (n < 1 || n > 100000000 || conc < 1 || conc > 1024 || strlen(base) > 300) {
    fprintf(stderr, "multi_floor: bad arguments\n");
    return 2;
  }
  if (conc > n) conc = n;
  curl_global_init(CURL_GLOBAL_ALL);
  hdrs = headers("multi_floor", 1);
  slots = calloc((size_t)conc, sizeof *slots);
  if (slots == NULL) return 2;

  t0 = now();
  m = curl_multi_init();
  if (m == NULL) return 2;
  for (i = 0; i < conc; i++) {
    CURL *h = curl_easy_init();
    if (h == NULL) return 2;
    slots[i].easy = h;
    setup_request(h, hdrs, &slots[i].body, 1);
    curl_easy_setopt(h, CURLOPT_PRIVATE, &slots[i]);
    if (mm_options) {
      curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
      curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
      curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
      curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
      curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
      curl_easy_setopt(h, CURLOPT_PIPEWAIT, strncmp(base, "https:", 6) == 0 ? 1L : 0L);
    }
    start(m, &slots[i], base, next++);
    in_flight++;
  }

  /* Bounded: every transfer ends (TIMEOUT_MS), and each ends only once. */
  while (in_flight > 0) {
    int running = 0, left = 0;
    CURLMsg *msg;
    if (curl_multi_perform(m, &running) != CURLM_OK) return 2;
    while ((msg = curl_multi_info_read(m, &left)) != NULL) {
      slot *s = NULL;
      long status = 0;
      if (msg->msg != CURLMSG_DONE) continue;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
      if (msg->data.result == CURLE_OK) curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
      if (msg->data.result == CURLE_OK && status == 200 && s->body.len > 0)
        ok++;
      else
        fail++;
      curl_multi_remove_handle(m, s->easy);
      in_flight--;
      if (next < n) {
        start(m, s, base, next++);
        in_flight++;
        running = 1;
      }
    }
    if (in_flight > 0 && running > 0 && curl_multi_poll(m, NULL, 0, 1000, NULL) != CURLM_OK) return 2;
  }
  printf("ok=%ld fail=%ld seconds=%.6f\n", ok, fail, now() - t0);

  for (i = 0; i < conc; i++) {
    curl_easy_cleanup(slots[i].easy);
    free(slots[i].body.data);
  }
  curl_multi_cleanup(m);
  free(slots);
  curl_slist_free_all(hdrs);
  curl_global_cleanup();
  return fail == 0 ? 0 : 1;
}
