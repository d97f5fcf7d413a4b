/*
 * bench/floor.c: the sequential floor for `mm`'s single calls.
 *
 * A plain C program that sends the same request as `c:regen_token(id)`
 * (same method, URL, headers and wire bytes), or as
 * `c:get_jobs{ per_page = 200 }`, on one reused libcurl easy handle,
 * collecting the body and checking nothing but the transfer result and
 * the status code. What `mm` costs above this is the price of the library
 * (for get_jobs, decoding the JSON included).
 *
 * Usage: floor BASE_URL N [WARMUP [jobs]]
 *   BASE_URL   e.g. http://127.0.0.1:8080 (the API root is BASE_URL/api/v4)
 *   N          timed calls;  WARMUP  untimed calls first (default 0)
 *   jobs       GET /api/v4/jobs?per_page=200 instead of regen_token
 * Environment: BENCH_TOKEN (bearer token), BENCH_UA (User-Agent value).
 * Ids are "bench" + 21 digits of (i % 1000), as in bench/mm_bench.lua.
 * Prints one line: "ok=N fail=N seconds=S".
 */
#define _POSIX_C_SOURCE 200809L
#include "floor_common.h"

int main(int argc, char **argv) {
  const char *base;
  long n, warmup, i, ok = 0, fail = 0;
  int jobs;
  char url[512];
  double t0 = 0;
  buf body = {NULL, 0, 0};
  struct curl_slist *hdrs;
  CURL *h;

  if (argc < 3) {
    fprintf(stderr, "usage: floor BASE_URL N [WARMUP [jobs]]\n");
    return 2;
  }
  base = argv[1];
  n = strtol(argv[2], NULL, 10);
  warmup = argc > 3 ? strtol(argv[3], NULL, 10) : 0;
  jobs = argc > 4 && strcmp(argv[4], "jobs") == 0;
  if (n < 1 || n > 100000000 || warmup < 0 || warmup > 100000000 || strlen(base) > 300) {
    fprintf(stderr, "floor: bad arguments\n");
    return 2;
  }
  curl_global_init(CURL_GLOBAL_ALL);
  hdrs = headers("floor", !jobs);
  h = curl_easy_init();
  if (h == NULL) return 2;
  setup_request(h, hdrs, &body, !jobs);
  if (jobs) {
    snprintf(url, sizeof url, "%s/api/v4/jobs?per_page=200", base);
    curl_easy_setopt(h, CURLOPT_URL, url);
  }

  for (i = 0; i < warmup + n; i++) {
    CURLcode rc;
    long status = 0;
    if (i == warmup) t0 = now();
    if (!jobs) {
      snprintf(url, sizeof url, "%s/api/v4/commands/bench%021ld/regen_token", base, i % 1000);
      curl_easy_setopt(h, CURLOPT_URL, url);
    }
    body.len = 0;
    rc = curl_easy_perform(h);
    if (rc == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (i >= warmup) {
      if (rc == CURLE_OK && status == 200 && body.len > 0)
        ok++;
      else
        fail++;
    }
  }
  printf("ok=%ld fail=%ld seconds=%.6f\n", ok, fail, now() - t0);

  curl_easy_cleanup(h);
  curl_slist_free_all(hdrs);
  free(body.data);
  curl_global_cleanup();
  return fail == 0 ? 0 : 1;
}
