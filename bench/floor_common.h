/*
 * bench/floor_common.h: what the two C floors (floor.c, multi_floor.c)
 * share: a body buffer, a clock and the request headers that give the
 * same wire bytes as `mm`.
 */
#ifndef FLOOR_COMMON_H
#define FLOOR_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

typedef struct {
  char *data;
  size_t len, cap;
} buf;

/* CURLOPT_WRITEFUNCTION with a buf as CURLOPT_WRITEDATA. */
static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  buf *b = ud;
  size_t total = size * n;
  if (b->cap - b->len < total) {
    size_t cap = b->cap ? b->cap : 1024;
    char *d;
    while (cap - b->len < total) cap *= 2;
    d = realloc(b->data, cap);
    if (d == NULL) return 0;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, total);
  b->len += total;
  return total;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* mm's headers, from BENCH_TOKEN and BENCH_UA; `prog` names the program
 * in the error when they are missing. `put` adds what mm adds for a
 * body-less PUT: "Content-Type:" (no form type from libcurl). */
static struct curl_slist *headers(const char *prog, int put) {
  const char *token = getenv("BENCH_TOKEN"), *ua = getenv("BENCH_UA");
  char line[512];
  struct curl_slist *l = NULL;
  if (token == NULL || ua == NULL) {
    fprintf(stderr, "%s: BENCH_TOKEN and BENCH_UA must be set\n", prog);
    exit(2);
  }
  snprintf(line, sizeof line, "Authorization: Bearer %s", token);
  l = curl_slist_append(l, line);
  l = curl_slist_append(l, "Accept: application/json");
  snprintf(line, sizeof line, "User-Agent: %s", ua);
  l = curl_slist_append(l, line);
  l = curl_slist_append(l, "Expect:");
  if (put) l = curl_slist_append(l, "Content-Type:");
  if (l == NULL) exit(2);
  return l;
}

/* The request options the floors set on an easy handle: mm's PUT
 * regen_token with no body (`put`) or its GET, its timeouts, the body
 * into `body`. */
static void setup_request(CURL *h, struct curl_slist *hdrs, buf *body, int put) {
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
  if (put) {
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
  }
  /* mm asks for gzip by default (option compression): libcurl sends
   * Accept-Encoding and would decode a gzip body. */
  curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "gzip");
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
}

#endif
