/* Engine.IO v4 / Socket.IO v5 load generator for benchmarks/engineio and benchmarks/socketio
 * (loopback only). Compiled by the run.py scripts with gcc -O2.
 *
 *   eioload MODE PORT PATH CONNS INFLIGHT SIZE TOTAL TIMECAP_S
 *
 * MODE:
 *   ws-echo     Engine.IO over WebSocket: CONNS sessions (handshake straight on WebSocket),
 *               INFLIGHT text messages "4<SIZE bytes>" in flight per session until TOTAL echoes.
 *   poll-echo   Engine.IO over HTTP long-polling: CONNS sessions, each with one keep-alive TCP
 *               connection that always has a GET pending and one that POSTs the messages
 *               (batched, at most 16 packets per POST, python-engineio's limit); INFLIGHT
 *               messages in flight per session until TOTAL echoes.
 *   ws-idle     CONNS Engine.IO WebSocket sessions, prints {"ready": n}, holds them (answering
 *               pings) until a line arrives on stdin or TIMECAP_S passed.
 *   poll-idle   CONNS polling sessions, each with a parked GET (re-issued after a ping is
 *               answered), held like ws-idle.
 *   sio-ack     Socket.IO over WebSocket: CONNS clients connect to "/" ("40"), each keeps
 *               INFLIGHT `42<id>["echo","<SIZE bytes>"]` events in flight and counts the acks
 *               `43<id>[...]` until TOTAL.
 *   sio-bcast   CONNS Socket.IO clients; client 0 emits `42["bcast","<SIZE bytes>"]`, the server
 *               emits "tick" to a room holding every client; the time from the trigger to the
 *               CONNS-th delivery is one broadcast. TOTAL broadcasts, one after the other.
 *
 * Every answer is checked: an echo must carry exactly the payload sent, an ack must be
 * `43<id>["<payload>"]` with an id that is outstanding on that connection (not a duplicate,
 * not one never sent), a broadcast delivery must be `42["tick","<payload>"]`. The first wrong
 * answer ends the run: "CHECK FAILED: ..." on stderr, exit status 3.
 *
 * Prints one JSON line (with EIOLOAD_SYNC set, a {"connected": n} line first; then it waits
 * for a line on stdin before the measured phase and again before closing the connections). Every mode reports the generator's own CPU time (getrusage) so the
 * caller can tell whether the generator saturated its core. Single-threaded epoll; frames
 * are built with a fixed mask key; server frames are parsed in place.
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
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { M_WS_ECHO, M_POLL_ECHO, M_WS_IDLE, M_POLL_IDLE, M_SIO_ACK, M_SIO_BCAST };
enum { ROLE_WS, ROLE_GET, ROLE_POST, ROLE_IDLE_POLL };

typedef struct {
    int fd, role, sess;
    unsigned char *rbuf;
    size_t rlen, rcap;
    unsigned char *wbuf;
    size_t wlen, woff, wcap;
    int want_out;   /* registered for EPOLLOUT: a flush hit EAGAIN */
    int busy;       /* polling: a request is outstanding */
    int idle_post;  /* poll-idle: the outstanding request is the pong POST */
    long ackid;
    long *outstanding;  /* sio-ack: ids sent and not yet acknowledged */
    int nout, outcap;
} conn_t;

typedef struct {
    char sid[80];
    int get_c, post_c;
    long pending;  /* messages to POST */
    long pongs;    /* pongs to POST */
} sess_t;

static int mode, port;
/* PORT may be a comma-separated list (WebSocket modes): connection i goes to ports[i % nports]. */
static int ports[16], nports, next_port;
static const char *path;
static size_t msg_size;
static char *payload;  /* SIZE bytes of letters */
static long sent_total, recv_total, target_total;
static conn_t *cs;
static sess_t *ss;
static int ncs;
static long pings_answered;
static long get_responses, post_responses;  /* polling: packets per request = batching */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_self(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *m) { perror(m); exit(1); }
static void fail(const char *m, const void *data, size_t len) {
    fprintf(stderr, "%s: %.*s\n", m, (int)(len > 300 ? 300 : len), (const char *)data);
    exit(1);
}

/* A wrong answer from the server: the run is void. */
static void check_failed(const char *what, const void *data, size_t len) {
    fprintf(stderr, "CHECK FAILED: %s: %.*s\n", what, (int)(len > 300 ? 300 : len), (const char *)data);
    exit(3);
}

static int is_payload(const char *d, size_t n) { return n == msg_size && memcmp(d, payload, msg_size) == 0; }

/* `43<id>["<payload>"]` (d, n: the Engine.IO message payload, starting at "43"). */
static void check_ack(conn_t *c, const char *d, size_t n) {
    size_t i = 2;
    long id = 0;
    if (i >= n || d[i] < '0' || d[i] > '9') check_failed("ack without an id", d, n);
    while (i < n && d[i] >= '0' && d[i] <= '9' && i < 20) id = id * 10 + (d[i++] - '0');
    int k;
    for (k = 0; k < c->nout && c->outstanding[k] != id; k++) {}
    if (k == c->nout) check_failed("ack id not outstanding on this connection (duplicate or never sent)", d, n);
    c->outstanding[k] = c->outstanding[--c->nout];
    if (n - i != msg_size + 4 || memcmp(d + i, "[\"", 2) != 0 || !is_payload(d + i + 2, msg_size)
        || memcmp(d + n - 2, "\"]", 2) != 0)
        check_failed("ack arguments differ from the event's", d, n);
}

/* EIOLOAD_SRC_SPREAD=K: session s connects from 127.0.(s % K + 1).1, so that a balancer
 * hashing the client address (nginx ip_hash: first three octets) spreads the sessions. */
static int src_spread, cur_sess;

static int tcp_connect(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    if (src_spread > 0) {
        struct sockaddr_in src = {0};
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl((127u << 24) | ((unsigned)(cur_sess % src_spread + 1) << 8) | 1u);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) die("bind");
    }
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    port = ports[next_port++ % nports];
    a.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {15, 0};  /* setup reads are blocking but bounded */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static conn_t *new_conn(int role, int sess) {
    conn_t *c = &cs[ncs++];
    cur_sess = sess;
    c->fd = tcp_connect();
    c->role = role;
    c->sess = sess;
    c->rcap = 65536;
    c->rbuf = malloc(c->rcap);
    c->wcap = 4096;
    c->wbuf = malloc(c->wcap);
    return c;
}

static void wreserve(conn_t *c, size_t more) {
    if (c->woff && c->woff == c->wlen) c->woff = c->wlen = 0;
    if (c->wlen + more > c->wcap) {
        c->wcap = (c->wlen + more) * 2;
        c->wbuf = realloc(c->wbuf, c->wcap);
    }
}

static void queue_raw(conn_t *c, const void *data, size_t len) {
    wreserve(c, len);
    memcpy(c->wbuf + c->wlen, data, len);
    c->wlen += len;
}

/* A masked text frame whose payload is the concatenation of a and b. */
static void queue_text2(conn_t *c, const char *a, size_t alen, const char *b, size_t blen) {
    static const unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t n = alen + blen;
    wreserve(c, n + 14);
    unsigned char *f = c->wbuf + c->wlen;
    size_t p = 0;
    f[p++] = 0x81;
    if (n < 126) f[p++] = 0x80 | (unsigned char)n;
    else if (n < 65536) { f[p++] = 0x80 | 126; f[p++] = n >> 8; f[p++] = n & 255; }
    else { f[p++] = 0x80 | 127; for (int i = 7; i >= 0; i--) f[p++] = (n >> (8 * i)) & 255; }
    memcpy(f + p, key, 4);
    p += 4;
    for (size_t i = 0; i < alen; i++) f[p + i] = (unsigned char)a[i] ^ key[i & 3];
    for (size_t i = 0; i < blen; i++) f[p + alen + i] = (unsigned char)b[i] ^ key[(alen + i) & 3];
    c->wlen += p + n;
}

static void queue_text(conn_t *c, const char *s) { queue_text2(c, s, strlen(s), "", 0); }

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

static int ep = -1;

/* Flushes and registers for EPOLLOUT only while bytes are left over (most sends complete at
 * once; writability edges for every ACK would only cost wake-ups). */
static void flush_ev(conn_t *c) {
    int want = !flush(c);
    if (want != c->want_out && ep >= 0) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLET | (want ? EPOLLOUT : 0), .data.u32 = (uint32_t)(c - cs)};
        if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl mod");
        c->want_out = want;
    }
}

static void flush_blocking(conn_t *c) {
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n < 0) die("send (setup)");
        c->woff += n;
    }
    c->woff = c->wlen = 0;
}

static void read_more_blocking(conn_t *c) {
    if (c->rlen == c->rcap) { c->rcap *= 2; c->rbuf = realloc(c->rbuf, c->rcap); }
    ssize_t r = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
    if (r < 0) die("recv (setup)");
    if (r == 0) { fprintf(stderr, "server closed the connection during setup\n"); exit(1); }
    c->rlen += r;
}

static void consume_front(conn_t *c, size_t n) {
    memmove(c->rbuf, c->rbuf + n, c->rlen - n);
    c->rlen -= n;
}

/* ---------------------------------------------------------------- HTTP (polling) */

/* If a complete response is buffered: returns 1, sets status/body/bodylen and *total (bytes
 * to consume afterwards). Chunked responses are not expected from any peer here. */
static int http_response(conn_t *c, int *status, char **body, size_t *bodylen, size_t *total) {
    unsigned char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t hlen = (size_t)(end - c->rbuf) + 4;
    long clen = -1;
    char *h = (char *)c->rbuf;
    for (char *line = memchr(h, '\n', hlen); line && line < (char *)end; line = memchr(line + 1, '\n', (char *)end - line)) {
        if (strncasecmp(line + 1, "content-length:", 15) == 0) clen = atol(line + 16);
        else if (strncasecmp(line + 1, "transfer-encoding:", 18) == 0) fail("chunked response", h, hlen);
    }
    if (clen < 0) fail("response without Content-Length", h, hlen);
    if (c->rlen < hlen + (size_t)clen) return 0;
    *status = atoi(h + 9);
    *body = h + hlen;
    *bodylen = (size_t)clen;
    *total = hlen + (size_t)clen;
    return 1;
}

static void queue_get(conn_t *c, const char *sid) {
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s?EIO=4&transport=polling%s%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n",
                     path, sid ? "&sid=" : "", sid ? sid : "", port);
    queue_raw(c, req, n);
    c->busy = 1;
}

static void queue_post(conn_t *c, const char *sid, const char *body, size_t blen) {
    char req[512];
    int n = snprintf(req, sizeof req,
                     "POST %s?EIO=4&transport=polling&sid=%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: %zu\r\n\r\n",
                     path, sid, port, blen);
    queue_raw(c, req, n);
    queue_raw(c, body, blen);
    c->busy = 1;
}

static void extract_sid(const char *body, size_t len, char *out) {
    const char *p = memmem(body, len, "\"sid\":\"", 7);
    if (!p) fail("no sid in open packet", body, len);
    p += 7;
    size_t i = 0;
    while (p < body + len && *p != '"' && i < 79) out[i++] = *p++;
    out[i] = 0;
}

/* Polling handshake on c (blocking); fills s->sid. */
static void poll_handshake(conn_t *c, sess_t *s) {
    queue_get(c, NULL);
    flush_blocking(c);
    int status;
    char *body;
    size_t blen, total;
    while (!http_response(c, &status, &body, &blen, &total)) read_more_blocking(c);
    if (status != 200 || blen < 1 || body[0] != '0') fail("bad polling handshake", body, blen);
    extract_sid(body, blen, s->sid);
    consume_front(c, total);
    c->busy = 0;
}

/* Builds a POST body with up to 16 packets: pongs first, then messages. */
static void send_post(sess_t *s) {
    conn_t *c = &cs[s->post_c];
    static char *body;
    static size_t cap;
    size_t need = 16 * (msg_size + 2) + 16;
    if (cap < need) { cap = need; body = realloc(body, cap); }
    size_t n = 0;
    int packets = 0;
    while (s->pongs > 0 && packets < 16) {
        if (packets++) body[n++] = 0x1e;
        body[n++] = '3';
        s->pongs--;
        pings_answered++;
    }
    while (s->pending > 0 && packets < 16) {
        if (packets++) body[n++] = 0x1e;
        body[n++] = '4';
        memcpy(body + n, payload, msg_size);
        n += msg_size;
        s->pending--;
        sent_total++;
    }
    if (!packets) return;
    queue_post(c, s->sid, body, n);
}

/* Handles the complete responses buffered on a polling connection. */
static void poll_process(conn_t *c) {
    int status;
    char *body;
    size_t blen, total;
    while (http_response(c, &status, &body, &blen, &total)) {
        sess_t *s = &ss[c->sess];
        if (status != 200) fail("polling request failed", body, blen);
        c->busy = 0;
        if (c->role == ROLE_POST || (c->role == ROLE_IDLE_POLL && c->idle_post)) {
            if (blen != 2 || strncasecmp(body, "ok", 2) != 0) fail("unexpected POST answer", body, blen);
            c->idle_post = 0;
            post_responses++;
        } else {
            get_responses++;
            long msgs = 0;
            size_t i = 0;
            while (i < blen) {
                char *sep = memchr(body + i, 0x1e, blen - i);
                size_t end = sep ? (size_t)(sep - body) : blen;
                char t = body[i];
                if (t == '4') {
                    if (!is_payload(body + i + 1, end - i - 1)) check_failed("polling echo differs from the message sent", body + i, end - i);
                    msgs++;
                }
                else if (t == '2') s->pongs++;
                else if (t == '1') fail("server closed the session", body + i, end - i);
                i = end + 1;
            }
            recv_total += msgs;
            if (mode == M_POLL_ECHO) {
                long room = target_total - sent_total - s->pending;
                s->pending += msgs < room ? msgs : (room > 0 ? room : 0);
            }
        }
        consume_front(c, total);
        if (c->role == ROLE_IDLE_POLL) {
            if (s->pongs) {
                queue_post(c, s->sid, "3", 1);
                pings_answered += s->pongs;
                s->pongs = 0;
                c->idle_post = 1;
            } else {
                queue_get(c, s->sid);
            }
        } else if (c->role == ROLE_GET) {
            queue_get(c, s->sid);
        }
        if (mode == M_POLL_ECHO) {
            conn_t *pc = &cs[s->post_c];
            if (!pc->busy) { send_post(s); flush_ev(pc); }
        }
    }
}

/* ---------------------------------------------------------------- WebSocket */

static void ws_handshake(conn_t *c) {
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     path, port);
    queue_raw(c, req, n);
    flush_blocking(c);
    unsigned char *end;
    while (!(end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4))) read_more_blocking(c);
    if (strncmp((char *)c->rbuf, "HTTP/1.1 101", 12) != 0) fail("bad WebSocket handshake", c->rbuf, c->rlen);
    consume_front(c, (size_t)(end - c->rbuf) + 4);
}

/* If a complete frame is buffered: returns 1 with opcode, payload, len and total size. */
static int ws_frame(conn_t *c, size_t at, int *op, unsigned char **data, size_t *len, size_t *total) {
    size_t left = c->rlen - at;
    if (left < 2) return 0;
    unsigned char *f = c->rbuf + at;
    uint64_t n = f[1] & 0x7f;
    size_t hl = 2;
    if (n == 126) { if (left < 4) return 0; n = ((uint64_t)f[2] << 8) | f[3]; hl = 4; }
    else if (n == 127) {
        if (left < 10) return 0;
        n = 0;
        for (int i = 0; i < 8; i++) n = (n << 8) | f[2 + i];
        hl = 10;
    }
    if (left < hl + n) return 0;
    *op = f[0] & 0x0f;
    *data = f + hl;
    *len = (size_t)n;
    *total = hl + (size_t)n;
    return 1;
}

/* Blocking: the next text frame's payload (copied to out, NUL-terminated). */
static void ws_read_text_blocking(conn_t *c, char *out, size_t cap) {
    for (;;) {
        int op;
        unsigned char *d;
        size_t n, total;
        if (ws_frame(c, 0, &op, &d, &n, &total)) {
            if (op == 0x8) fail("server closed the WebSocket during setup", d, n);
            if (op == 0x1) {
                size_t k = n < cap - 1 ? n : cap - 1;
                memcpy(out, d, k);
                out[k] = 0;
                consume_front(c, total);
                return;
            }
            consume_front(c, total);
            continue;
        }
        read_more_blocking(c);
    }
}

static void ws_open_session(conn_t *c, int sio) {
    char buf[1024];
    ws_handshake(c);
    ws_read_text_blocking(c, buf, sizeof buf);
    if (buf[0] != '0') fail("expected the Engine.IO open packet", buf, strlen(buf));
    if (sio) {
        queue_text(c, "40");
        flush_blocking(c);
        for (;;) {
            ws_read_text_blocking(c, buf, sizeof buf);
            if (strncmp(buf, "40", 2) == 0) break;
            if (strncmp(buf, "44", 2) == 0) fail("Socket.IO connect refused", buf, strlen(buf));
            if (buf[0] == '2') { queue_text(c, "3"); flush_blocking(c); }
        }
    }
}

static double *bcast_lat;
static long bcast_done, bcast_got;
static double bcast_t0;
static int nclients;

static void send_sio_event(conn_t *c) {
    char head[48];
    int n = snprintf(head, sizeof head, "42%ld[\"echo\",\"", c->ackid++);
    /* payload then closing quote+bracket: built as two pieces to avoid a copy */
    static char *tail;
    static size_t tcap;
    if (tcap < msg_size + 3) { tcap = msg_size + 3; tail = realloc(tail, tcap); memcpy(tail, payload, msg_size); memcpy(tail + msg_size, "\"]", 2); }
    queue_text2(c, head, n, tail, msg_size + 2);
    if (c->nout == c->outcap) {
        c->outcap = c->outcap ? 2 * c->outcap : 16;
        c->outstanding = realloc(c->outstanding, (size_t)c->outcap * sizeof *c->outstanding);
    }
    c->outstanding[c->nout++] = c->ackid - 1;
    sent_total++;
}

static void send_bcast_trigger(void) {
    char head[32] = "42[\"bcast\",\"";
    static char *tail;
    if (!tail) { tail = malloc(msg_size + 3); memcpy(tail, payload, msg_size); memcpy(tail + msg_size, "\"]", 2); }
    queue_text2(&cs[0], head, strlen(head), tail, msg_size + 2);
    bcast_t0 = now();
    bcast_got = 0;
    flush_ev(&cs[0]);
}

static void send_ws_message(conn_t *c) {
    queue_text2(c, "4", 1, payload, msg_size);
    sent_total++;
}

/* Parses the buffered server frames of a WebSocket connection. */
static void ws_process(conn_t *c) {
    size_t p = 0;
    int op;
    unsigned char *d;
    size_t n, total;
    long done = 0;
    while (ws_frame(c, p, &op, &d, &n, &total)) {
        p += total;
        if (op == 0x8) { fprintf(stderr, "server closed the WebSocket: %.*s\n", (int)(n > 2 ? n - 2 : 0), d + 2); exit(1); }
        if (op == 0x9) {  /* WebSocket-level ping: pong with the same payload */
            unsigned char f[2 + 4 + 125];
            if (n > 125) continue;
            f[0] = 0x8A; f[1] = 0x80 | (unsigned char)n;
            memset(f + 2, 0, 4);
            memcpy(f + 6, d, n);
            queue_raw(c, f, 6 + n);
            continue;
        }
        if (op != 0x1 || n == 0) continue;
        if (d[0] == '2') { queue_text(c, "3"); pings_answered++; continue; }
        if (d[0] == '1') fail("server closed the session", d, n);
        if (d[0] != '4') continue;
        if (mode == M_WS_ECHO) {
            if (!is_payload((const char *)d + 1, n - 1)) check_failed("WebSocket echo differs from the message sent", d, n);
            done++;
        } else if (mode == M_SIO_ACK && n > 1 && d[1] == '3') {
            check_ack(c, (const char *)d, n);
            done++;
        } else if (mode == M_SIO_BCAST && n > 1 && d[1] == '2') {
            if (n != msg_size + 13 || memcmp(d, "42[\"tick\",\"", 11) != 0 || !is_payload((const char *)d + 11, msg_size)
                || memcmp(d + n - 2, "\"]", 2) != 0)
                check_failed("broadcast delivery is not 42[\"tick\",\"<payload>\"]", d, n);
            bcast_got++;
        }
    }
    if (p) consume_front(c, p);
    if (mode == M_WS_ECHO || mode == M_SIO_ACK) {
        recv_total += done;
        for (long k = 0; k < done && sent_total < target_total; k++) {
            if (mode == M_WS_ECHO) send_ws_message(c);
            else send_sio_event(c);
        }
    }
}

static void on_readable(conn_t *c) {
    for (;;) {
        if (c->rlen == c->rcap) { c->rcap *= 2; c->rbuf = realloc(c->rbuf, c->rcap); }
        ssize_t r = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
        if (r < 0) {
            if (errno == EAGAIN) break;
            die("recv");
        }
        if (r == 0) { fprintf(stderr, "server closed the connection\n"); exit(1); }
        size_t space = c->rcap - c->rlen;
        c->rlen += r;
        if (c->role == ROLE_WS) ws_process(c);
        else poll_process(c);
        /* Edge-triggered: bytes arriving after this short read raise a new edge, so the
         * extra recv() that would only return EAGAIN is skipped. */
        if ((size_t)r < space) break;
    }
}

/* EIOLOAD_SYNC=1: the caller reads the server's CPU time between the phases, so the
 * generator stops after the setup and after the result until it gets a line on stdin. */
static void wait_stdin_line(void) {
    char ch;
    while (read(0, &ch, 1) == 1 && ch != '\n') {}
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 9) {
        fprintf(stderr, "usage: %s MODE PORT PATH CONNS INFLIGHT SIZE TOTAL TIMECAP_S\n", argv[0]);
        return 2;
    }
    const char *m = argv[1];
    mode = !strcmp(m, "ws-echo") ? M_WS_ECHO : !strcmp(m, "poll-echo") ? M_POLL_ECHO
         : !strcmp(m, "ws-idle") ? M_WS_IDLE : !strcmp(m, "poll-idle") ? M_POLL_IDLE
         : !strcmp(m, "sio-ack") ? M_SIO_ACK : !strcmp(m, "sio-bcast") ? M_SIO_BCAST : -1;
    if (mode < 0) { fprintf(stderr, "unknown mode %s\n", m); return 2; }
    for (char *p = argv[2]; *p && nports < 16; nports++) {
        ports[nports] = atoi(p);
        while (*p && *p != ',') p++;
        if (*p == ',') p++;
    }
    port = ports[0];
    if (getenv("EIOLOAD_SRC_SPREAD")) src_spread = atoi(getenv("EIOLOAD_SRC_SPREAD"));
    path = argv[3];
    int nconn = atoi(argv[4]), inflight = atoi(argv[5]);
    msg_size = strtoul(argv[6], 0, 10);
    target_total = atol(argv[7]);
    double cap = atof(argv[8]);
    nclients = nconn;
    payload = malloc(msg_size + 1);
    for (size_t i = 0; i < msg_size; i++) payload[i] = (char)('a' + i % 26);

    cs = calloc(2 * (size_t)nconn + 1, sizeof *cs);
    ss = calloc((size_t)nconn + 1, sizeof *ss);
    double t_open = now();
    for (int i = 0; i < nconn; i++) {
        if (mode == M_POLL_ECHO) {
            conn_t *g = new_conn(ROLE_GET, i);
            ss[i].get_c = (int)(g - cs);
            poll_handshake(g, &ss[i]);
            conn_t *pc = new_conn(ROLE_POST, i);
            ss[i].post_c = (int)(pc - cs);
        } else if (mode == M_POLL_IDLE) {
            conn_t *g = new_conn(ROLE_IDLE_POLL, i);
            ss[i].get_c = ss[i].post_c = (int)(g - cs);
            poll_handshake(g, &ss[i]);
        } else {
            conn_t *c = new_conn(ROLE_WS, i);
            ws_open_session(c, mode == M_SIO_ACK || mode == M_SIO_BCAST);
        }
    }
    double open_s = now() - t_open;
    for (int i = 0; i < ncs; i++) fcntl(cs[i].fd, F_SETFL, fcntl(cs[i].fd, F_GETFL) | O_NONBLOCK);
    ep = epoll_create1(0);
    for (int i = 0; i < ncs; i++) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev) < 0) die("epoll_ctl");
    }
    struct epoll_event evs[512];

    if (mode == M_WS_IDLE || mode == M_POLL_IDLE) {
        if (mode == M_POLL_IDLE)
            for (int i = 0; i < nconn; i++) { queue_get(&cs[ss[i].get_c], ss[i].sid); flush_ev(&cs[ss[i].get_c]); }
        printf("{\"ready\": %d, \"open_seconds\": %.3f}\n", nconn, open_s);
        fflush(stdout);
        struct epoll_event sev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
        epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev);
        double t0 = now();
        while (now() - t0 < cap) {
            int n = epoll_wait(ep, evs, 512, 200);
            for (int e = 0; e < n; e++) {
                if (evs[e].data.u32 == UINT32_MAX) goto idle_done;
                conn_t *c = &cs[evs[e].data.u32];
                if (evs[e].events & EPOLLIN) on_readable(c);
                flush_ev(c);
            }
        }
    idle_done:
        fprintf(stderr, "{\"pings_answered\": %ld}\n", pings_answered);
        for (int i = 0; i < ncs; i++) close(cs[i].fd);
        return 0;
    }

    int sync = getenv("EIOLOAD_SYNC") != NULL;
    if (sync) {
        printf("{\"connected\": %d, \"open_seconds\": %.3f}\n", nconn, open_s);
        fflush(stdout);
        wait_stdin_line();
    }
    get_responses = post_responses = 0;
    double cpu0 = cpu_self();
    double t0 = now();
    if (mode == M_SIO_BCAST) {
        bcast_lat = calloc((size_t)target_total + 1, sizeof *bcast_lat);
        send_bcast_trigger();
    } else {
        for (int i = 0; i < nconn; i++) {
            for (int k = 0; k < inflight && sent_total < target_total; k++) {
                if (mode == M_WS_ECHO) send_ws_message(&cs[i]);
                else if (mode == M_SIO_ACK) send_sio_event(&cs[i]);
                else ss[i].pending++;
            }
            if (mode == M_POLL_ECHO) {
                queue_get(&cs[ss[i].get_c], ss[i].sid);
                flush_ev(&cs[ss[i].get_c]);
                send_post(&ss[i]);
                flush_ev(&cs[ss[i].post_c]);
            } else {
                flush_ev(&cs[i]);
            }
        }
    }
    int complete = 0;
    while (now() - t0 < cap) {
        if (mode == M_SIO_BCAST ? bcast_done >= target_total : recv_total >= target_total) { complete = 1; break; }
        int n = epoll_wait(ep, evs, 512, 100);
        for (int e = 0; e < n; e++) {
            conn_t *c = &cs[evs[e].data.u32];
            if (evs[e].events & EPOLLIN) on_readable(c);
            flush_ev(c);
        }
        if (mode == M_SIO_BCAST && bcast_got >= nclients) {
            bcast_lat[bcast_done++] = now() - bcast_t0;
            if (bcast_got > nclients) { fprintf(stderr, "more deliveries than clients\n"); return 1; }
            if (bcast_done < target_total) send_bcast_trigger();
        }
    }
    double dt = now() - t0;
    double gen_cpu = cpu_self() - cpu0;
    if (mode == M_SIO_BCAST) {
        double sum = 0;
        for (long i = 0; i < bcast_done; i++) sum += bcast_lat[i];
        qsort(bcast_lat, (size_t)bcast_done, sizeof *bcast_lat, cmp_double);
        double p50 = bcast_done ? bcast_lat[bcast_done / 2] : 0;
        double p99 = bcast_done ? bcast_lat[(bcast_done * 99) / 100 < bcast_done ? (bcast_done * 99) / 100 : bcast_done - 1] : 0;
        double mx = bcast_done ? bcast_lat[bcast_done - 1] : 0;
        printf("{\"broadcasts\": %ld, \"clients\": %d, \"seconds\": %.4f, \"broadcasts_per_s\": %.2f, "
               "\"deliveries_per_s\": %.1f, \"mean_ms\": %.3f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f, "
               "\"gen_cpu\": %.3f, \"gen_util\": %.3f, \"open_seconds\": %.3f, \"complete\": %s}\n",
               bcast_done, nclients, dt, bcast_done / dt, bcast_done * (double)nclients / dt,
               bcast_done ? sum / bcast_done * 1e3 : 0, p50 * 1e3, p99 * 1e3, mx * 1e3, gen_cpu, gen_cpu / dt,
               open_s, complete ? "true" : "false");
    } else {
        printf("{\"messages\": %ld, \"seconds\": %.4f, \"msgs_per_s\": %.1f, \"gen_cpu\": %.3f, \"gen_util\": %.3f, "
               "\"pings_answered\": %ld, \"get_responses\": %ld, \"post_responses\": %ld, \"open_seconds\": %.3f, "
               "\"complete\": %s}\n",
               recv_total, dt, recv_total / dt, gen_cpu, gen_cpu / dt, pings_answered, get_responses, post_responses,
               open_s,
               complete ? "true" : "false");
    }
    fflush(stdout);
    if (sync) wait_stdin_line();
    return 0;
}
