/* An open-loop HTTP/1.1 client at a fixed rate, for Benchmarks/peerbench.sh's paced phase.
 *
 *   paced_client HOST PORT PATH RATE CONNECTIONS DURATION WARMUP [TOKEN] [LATENCY_FILE]
 *
 * Request k is due at t0 + k / RATE (evenly spaced: no bursts), for WARMUP + DURATION seconds. A due request goes
 * out on any idle keep-alive connection (one request in flight per connection, CONNECTIONS of them); when none is
 * idle it waits for one. Its latency runs from the time it was DUE to the end of its response, so a server that falls
 * behind shows it (no coordinated omission); the time from the actual send is reported beside it. Requests due
 * during the warm-up are not recorded. Prints one JSON line; LATENCY_FILE gets every recorded latency (µs from due
 * time), one per line, for pooling rounds. Responses must carry Content-Length (nginx and Portcullis both do here).
 * Build: gcc -O2 -o paced_client paced_client.c */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct { int fd; int busy; int64_t due, sent; size_t len; char buf[16384]; } conn_t;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}
static int64_t pct(int64_t *v, size_t n, double q) {
  if (!n) return -1;
  size_t k = (size_t)(q / 100.0 * n + 0.999999999);
  if (k < 1) k = 1;
  if (k > n) k = n;
  return v[k - 1];
}
static struct sockaddr_in addr;
static int open_conn(int ep, conn_t *c) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (c->fd < 0) return -1;
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) { close(c->fd); return -1; }
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
  c->busy = 0; c->len = 0;
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 8) {
    fprintf(stderr, "usage: %s HOST PORT PATH RATE CONNECTIONS DURATION WARMUP [TOKEN] [LATENCY_FILE]\n", argv[0]);
    return 2;
  }
  const char *host = argv[1], *path = argv[3], *token = argc > 8 ? argv[8] : "", *latfile = argc > 9 ? argv[9] : NULL;
  int port = atoi(argv[2]), nconn = atoi(argv[5]);
  double rate = atof(argv[4]), duration = atof(argv[6]), warmup = atof(argv[7]);
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET; addr.sin_port = htons(port);
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) { fprintf(stderr, "bad host %s\n", host); return 2; }
  char req[4096];
  int reqlen = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: application/json\r\n%s%s%s\r\n", path,
                        host, port, *token ? "Authorization: Bearer " : "", token, *token ? "\r\n" : "");
  int ep = epoll_create1(0);
  conn_t *conns = calloc(nconn, sizeof *conns);
  conn_t **idle = calloc(nconn, sizeof *idle);
  int nidle = 0;
  for (int i = 0; i < nconn; i++) {
    if (open_conn(ep, &conns[i]) < 0) { perror("connect"); return 1; }
  }
  usleep(100000); /* let the connects finish */
  for (int i = 0; i < nconn; i++) idle[nidle++] = &conns[i];

  const double period = 1e9 / rate;
  const int64_t total = (int64_t)(rate * (warmup + duration));
  const int64_t first_recorded = (int64_t)(rate * warmup);
  int64_t *lat = calloc(total + 1, sizeof *lat), *svc = calloc(total + 1, sizeof *svc);
  size_t nlat = 0;
  int64_t next = 0, done = 0, non2xx = 0, errors = 0, rec_first_due = -1, rec_last_end = 0;
  const int64_t t0 = now_ns() + 1000000;
  const int64_t deadline = t0 + (int64_t)((warmup + duration + 10) * 1e9);
  struct epoll_event evs[256];
  while (done + errors < total) {
    int64_t t = now_ns();
    if (t > deadline) break;
    /* send every due request that has a connection */
    while (next < total && nidle > 0) {
      int64_t due = t0 + (int64_t)(next * period);
      if (due > t) break;
      conn_t *c = idle[--nidle];
      c->busy = 1; c->due = due; c->sent = t; c->len = 0;
      ssize_t w = send(c->fd, req, reqlen, MSG_NOSIGNAL);
      if (w != reqlen) { /* a broken connection: count it, reconnect, the request is lost */
        errors++; epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); close(c->fd);
        if (open_conn(ep, c) < 0) { fprintf(stderr, "paced_client: cannot reconnect\n"); return 1; }
        idle[nidle++] = c;
      }
      next++;
    }
    /* sleep until the next due request, or a response */
    struct timespec to = {0, 0};
    if (next < total && nidle > 0) {
      int64_t wait = t0 + (int64_t)(next * period) - now_ns();
      if (wait > 0) { to.tv_sec = wait / 1000000000LL; to.tv_nsec = wait % 1000000000LL; }
    } else {
      to.tv_sec = 0; to.tv_nsec = 100000000; /* nothing to send: wait for responses */
    }
    int n = epoll_pwait2(ep, evs, 256, &to, NULL);
    for (int i = 0; i < n; i++) {
      conn_t *c = evs[i].data.ptr;
      ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len - 1, 0);
      if (r <= 0) { /* closed: reconnect in place; a request in flight on it is lost */
        if (r < 0 && errno == EAGAIN) continue;
        int was_busy = c->busy;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); close(c->fd);
        int ok = open_conn(ep, c) == 0;
        if (was_busy) { errors++; if (ok) idle[nidle++] = c; } /* an idle one is still in the idle list */
        if (!ok) { fprintf(stderr, "paced_client: cannot reconnect\n"); return 1; }
        continue;
      }
      c->len += r; c->buf[c->len] = 0;
      char *end = strstr(c->buf, "\r\n\r\n");
      if (!end) continue;
      size_t head = end + 4 - c->buf;
      long cl = -1;
      for (char *p = strstr(c->buf, "\r\n"); p && p < end; p = strstr(p + 2, "\r\n"))
        if (!strncasecmp(p + 2, "content-length:", 15)) cl = strtol(p + 17, NULL, 10);
      if (cl < 0) { fprintf(stderr, "response without Content-Length\n"); return 1; }
      if (c->len < head + (size_t)cl) continue;
      int64_t te = now_ns();
      int status = atoi(c->buf + 9);
      int64_t k = (int64_t)((c->due - t0) / period + 0.5);
      if (k >= first_recorded) {
        lat[nlat] = (te - c->due) / 1000; svc[nlat] = (te - c->sent) / 1000; nlat++;
        if (rec_first_due < 0 || c->due < rec_first_due) rec_first_due = c->due;
        if (te > rec_last_end) rec_last_end = te;
        if (status < 200 || status > 299) non2xx++;
      }
      done++;
      c->busy = 0; c->len = 0;
      idle[nidle++] = c;
    }
  }
  int64_t unfinished = total - done - errors;
  if (latfile) {
    FILE *f = fopen(latfile, "w");
    if (f) { for (size_t i = 0; i < nlat; i++) fprintf(f, "%lld\n", (long long)lat[i]); fclose(f); }
  }
  qsort(lat, nlat, sizeof *lat, cmp64);
  qsort(svc, nlat, sizeof *svc, cmp64);
  double span = rec_first_due >= 0 ? (rec_last_end - rec_first_due) / 1e9 : 0;
  printf("{\"asked_rps\": %.1f, \"connections\": %d, \"recorded\": %zu, \"achieved_rps\": %.1f, \"non2xx\": %lld, "
         "\"errors\": %lld, \"unfinished\": %lld, \"p50_us\": %lld, \"p90_us\": %lld, \"p99_us\": %lld, \"p999_us\": %lld, "
         "\"max_us\": %lld, \"service_p50_us\": %lld, \"service_p99_us\": %lld}\n",
         rate, nconn, nlat, span > 0 ? nlat / span : 0.0, (long long)non2xx, (long long)errors, (long long)unfinished,
         (long long)pct(lat, nlat, 50), (long long)pct(lat, nlat, 90), (long long)pct(lat, nlat, 99),
         (long long)pct(lat, nlat, 99.9), (long long)(nlat ? lat[nlat - 1] : -1), (long long)pct(svc, nlat, 50),
         (long long)pct(svc, nlat, 99));
  return 0;
}
