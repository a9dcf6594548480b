/* WebSocket / raw TCP echo load generator for benchmarks/echo (loopback only).
 *
 *   loadgen ws|raw HOST PORT CONNS INFLIGHT SIZE TOTAL TIMECAP_S [PATH]
 *       Opens CONNS connections (WebSocket handshake for "ws"), keeps INFLIGHT
 *       messages of SIZE bytes in flight per connection (masked binary frames for
 *       ws, plain bytes for raw) until TOTAL echoes came back or TIMECAP_S passed.
 *       Prints one JSON line: messages, seconds, msgs_per_s, mb_per_s.
 *   loadgen idle HOST PORT CONNS 0 0 0 TIMECAP_S [PATH]
 *       Opens CONNS WebSocket connections, prints {"ready": n}, holds them until a
 *       line arrives on stdin (or TIMECAP_S), then closes them.
 *
 * Single-threaded epoll; one buffer per connection; the echoed bytes are counted,
 * frame headers parsed (server frames are unmasked). Written to never be the
 * bottleneck: no allocation in the loop, masking with a 4-byte key word-wise.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    unsigned char *rbuf;
    size_t rlen, rcap;
    unsigned char *wbuf;   /* pending unsent bytes */
    size_t wlen, woff, wcap;
    long inflight;
    long got;
    uint64_t pend_payload; /* raw mode: bytes still expected for current message */
} conn_t;

static int is_ws;
static size_t msg_size;
static unsigned char *frame;   /* one pre-built message (masked frame or raw bytes) */
static size_t frame_len;
static long sent_total, recv_total, target_total;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *m) { perror(m); exit(1); }

static int open_conn(const char *host, int port, const char *path) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (is_ws) {
        char req[512];
        int n = snprintf(req, sizeof req,
                         "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                         path, host, port);
        if (write(fd, req, n) != n) die("write handshake");
        char resp[4096];
        size_t got = 0;
        for (;;) {
            ssize_t r = read(fd, resp + got, sizeof resp - 1 - got);
            if (r <= 0) die("read handshake");
            got += r;
            resp[got] = 0;
            if (strstr(resp, "\r\n\r\n")) break;
            if (got >= sizeof resp - 1) { fprintf(stderr, "handshake too long\n"); exit(1); }
        }
        if (strncmp(resp, "HTTP/1.1 101", 12) != 0) { fprintf(stderr, "bad handshake: %.80s\n", resp); exit(1); }
        if (strstr(resp, "\r\n\r\n") + 4 != resp + got) { fprintf(stderr, "data after handshake\n"); exit(1); }
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void build_frame(void) {
    if (!is_ws) {
        frame_len = msg_size;
        frame = malloc(frame_len);
        for (size_t i = 0; i < msg_size; i++) frame[i] = (unsigned char)('a' + i % 26);
        return;
    }
    size_t hl = 2 + 4 + (msg_size < 126 ? 0 : msg_size < 65536 ? 2 : 8);
    frame_len = hl + msg_size;
    frame = malloc(frame_len);
    size_t p = 0;
    frame[p++] = 0x82;
    if (msg_size < 126) frame[p++] = 0x80 | (unsigned char)msg_size;
    else if (msg_size < 65536) { frame[p++] = 0x80 | 126; frame[p++] = msg_size >> 8; frame[p++] = msg_size & 255; }
    else { frame[p++] = 0x80 | 127; for (int i = 7; i >= 0; i--) frame[p++] = (msg_size >> (8 * i)) & 255; }
    unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};
    memcpy(frame + p, key, 4);
    p += 4;
    for (size_t i = 0; i < msg_size; i++) frame[p + i] = (unsigned char)('a' + i % 26) ^ key[i & 3];
}

static void queue_bytes(conn_t *c, const unsigned char *data, size_t len) {
    if (c->wlen + len > c->wcap) {
        c->wcap = (c->wlen + len) * 2;
        c->wbuf = realloc(c->wbuf, c->wcap);
    }
    if (c->woff && c->woff == c->wlen) { c->woff = c->wlen = 0; }
    memcpy(c->wbuf + c->wlen, data, len);
    c->wlen += len;
}

/* Answer a server ping (keepalive) with a masked pong carrying the same payload. */
static void queue_pong(conn_t *c, const unsigned char *payload, size_t len) {
    unsigned char f[2 + 4 + 125];
    unsigned char key[4] = {0x11, 0x22, 0x33, 0x44};
    if (len > 125) return;
    f[0] = 0x8A;
    f[1] = 0x80 | (unsigned char)len;
    memcpy(f + 2, key, 4);
    for (size_t i = 0; i < len; i++) f[6 + i] = payload[i] ^ key[i & 3];
    queue_bytes(c, f, 6 + len);
}

static void queue_send(conn_t *c) {
    if (c->wlen + frame_len > c->wcap) {
        c->wcap = (c->wlen + frame_len) * 2;
        c->wbuf = realloc(c->wbuf, c->wcap);
    }
    if (c->woff && c->woff == c->wlen) { c->woff = c->wlen = 0; }
    memcpy(c->wbuf + c->wlen, frame, frame_len);
    c->wlen += frame_len;
    c->inflight++;
    sent_total++;
}

static int flush(conn_t *c) {
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) return 0;
            die("send");
        }
        c->woff += n;
    }
    c->woff = c->wlen = 0;
    return 1;
}

/* Consume complete echoes from rbuf; returns number of messages completed. */
static long consume(conn_t *c) {
    long done = 0;
    size_t p = 0;
    if (!is_ws) {
        size_t avail = c->rlen;
        /* raw: every msg_size bytes is one echo */
        c->pend_payload += avail;
        done = c->pend_payload / msg_size;
        c->pend_payload %= msg_size;
        c->rlen = 0;
        return done;
    }
    for (;;) {
        size_t left = c->rlen - p;
        if (left < 2) break;
        unsigned char *f = c->rbuf + p;
        uint64_t len = f[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) { if (left < 4) break; len = ((uint64_t)f[2] << 8) | f[3]; hl = 4; }
        else if (len == 127) {
            if (left < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | f[2 + i];
            hl = 10;
        }
        if (left < hl + len) break;
        int op = f[0] & 0x0f;
        if (op == 0x8) { fprintf(stderr, "server closed the connection\n"); exit(1); }
        if ((op == 0x1 || op == 0x2 || op == 0x0) && (f[0] & 0x80)) done++;
        if (op == 0x9) queue_pong(c, f + hl, (size_t)len);
        p += hl + len;
    }
    if (p) {
        memmove(c->rbuf, c->rbuf + p, c->rlen - p);
        c->rlen -= p;
    }
    return done;
}

int main(int argc, char **argv) {
    if (argc < 9) {
        fprintf(stderr, "usage: %s ws|raw|idle HOST PORT CONNS INFLIGHT SIZE TOTAL TIMECAP_S [PATH]\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1], *host = argv[2];
    int port = atoi(argv[3]), nconn = atoi(argv[4]), inflight = atoi(argv[5]);
    msg_size = strtoul(argv[6], 0, 10);
    target_total = atol(argv[7]);
    double cap = atof(argv[8]);
    const char *path = argc > 9 ? argv[9] : "/";
    if (strcmp(host, "127.0.0.1") != 0) { fprintf(stderr, "loopback only\n"); return 2; }
    is_ws = strcmp(mode, "raw") != 0;
    conn_t *cs = calloc(nconn, sizeof *cs);
    double t_open = now();
    for (int i = 0; i < nconn; i++) {
        cs[i].fd = open_conn(host, port, path);
        cs[i].rcap = msg_size * (inflight + 1) + 65536 + 16;
        cs[i].rbuf = malloc(cs[i].rcap);
    }
    if (strcmp(mode, "idle") == 0) {
        printf("{\"ready\": %d, \"open_seconds\": %.3f}\n", nconn, now() - t_open);
        fflush(stdout);
        struct pollfd pfd = {0, POLLIN, 0};
        poll(&pfd, 1, (int)(cap * 1000));
        for (int i = 0; i < nconn; i++) close(cs[i].fd);
        return 0;
    }
    build_frame();
    int ep = epoll_create1(0);
    for (int i = 0; i < nconn; i++) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u32 = i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev) < 0) die("epoll_ctl");
    }
    double t0 = now();
    for (int i = 0; i < nconn; i++) {
        for (int k = 0; k < inflight && sent_total < target_total; k++) queue_send(&cs[i]);
        flush(&cs[i]);
    }
    struct epoll_event evs[512];
    while (recv_total < target_total) {
        if (now() - t0 > cap) break;
        int n = epoll_wait(ep, evs, 512, 100);
        for (int e = 0; e < n; e++) {
            conn_t *c = &cs[evs[e].data.u32];
            if (evs[e].events & EPOLLIN) {
                for (;;) {
                    if (c->rlen == c->rcap) { c->rcap *= 2; c->rbuf = realloc(c->rbuf, c->rcap); }
                    ssize_t r = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
                    if (r < 0) { if (errno == EAGAIN) break; die("recv"); }
                    if (r == 0) { fprintf(stderr, "server closed the connection\n"); return 1; }
                    c->rlen += r;
                    long done = consume(c);
                    recv_total += done;
                    c->inflight -= done;
                    for (long d = 0; d < done && sent_total < target_total; d++) queue_send(c);
                }
            }
            flush(c);
        }
    }
    double dt = now() - t0;
    printf("{\"messages\": %ld, \"seconds\": %.4f, \"msgs_per_s\": %.1f, \"mb_per_s\": %.2f, \"complete\": %s}\n",
           recv_total, dt, recv_total / dt, recv_total * (double)msg_size / dt / 1e6,
           recv_total >= target_total ? "true" : "false");
    return 0;
}
