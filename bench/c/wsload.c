/* A WebSocket load client for `cashmarkets bench ws-fanout`: N connections on one epoll loop,
 * each upgrades, sends one prepared (masked) subscribe frame, then reads server frames and
 * records, per connection, the sequence numbers seen and, per message, the latency from the
 * timestamp in the gateway's 14-byte binary header (ms since the epoch) to its arrival.
 * Answers pings. Prints one JSON object. Loopback only; no TLS; server frames are unmasked.
 *
 * usage: wsload PORT N WARMUP_S DURATION_S SUBSCRIBE_FRAME_HEX */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536
#define BUCKETS 10000

typedef struct {
    int fd, upgraded, closed;
    size_t len;
    uint32_t first_seq, last_seq;
    uint64_t received;
    unsigned char buf[BUF];
} conn_t;

static uint64_t latency[BUCKETS];
static int measuring = 0;

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
static int hexval(char c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }

static void send_all(int fd, const unsigned char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) { if (errno == EAGAIN || errno == EINTR) continue; return; }
        p += w; n -= (size_t)w;
    }
}

static void pong(int fd, const unsigned char *payload, size_t n) {
    unsigned char f[2 + 4 + 125];
    if (n > 125) n = 125;
    f[0] = 0x8A; f[1] = 0x80 | (unsigned char)n;
    memset(f + 2, 0, 4); /* zero mask: payload unchanged */
    memcpy(f + 6, payload, n);
    send_all(fd, f, 6 + n);
}

/* Consume complete frames from c->buf; returns -1 when the server closed. */
static int frames(conn_t *c) {
    size_t off = 0;
    while (c->len - off >= 2) {
        unsigned char *p = c->buf + off;
        int op = p[0] & 0x0F;
        uint64_t n = p[1] & 0x7F;
        size_t h = 2;
        if (n == 126) { if (c->len - off < 4) break; n = ((uint64_t)p[2] << 8) | p[3]; h = 4; }
        else if (n == 127) { if (c->len - off < 10) break; n = 0; for (int i = 0; i < 8; i++) n = (n << 8) | p[2 + i]; h = 10; }
        if (c->len - off < h + n) break;
        unsigned char *q = p + h;
        if (op == 0x2 && n >= 14 && q[1] == 0x87) {
            int64_t ts = 0;
            for (int i = 0; i < 8; i++) ts = (ts << 8) | q[2 + i];
            uint32_t seq = ((uint32_t)q[10] << 24) | ((uint32_t)q[11] << 16) | ((uint32_t)q[12] << 8) | q[13];
            if (measuring) {
                if (!c->first_seq) c->first_seq = seq;
                c->last_seq = seq;
                c->received++;
                int64_t l = now_ms() - ts;
                if (l < 0) l = 0;
                if (l >= BUCKETS) l = BUCKETS - 1;
                latency[l]++;
            }
        } else if (op == 0x9) {
            pong(c->fd, q, (size_t)n);
        } else if (op == 0x8) {
            return -1;
        }
        off += h + n;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: wsload PORT N WARMUP_S DURATION_S FRAME_HEX\n"); return 2; }
    int port = atoi(argv[1]), n = atoi(argv[2]);
    double warmup = atof(argv[3]), duration = atof(argv[4]);
    size_t flen = strlen(argv[5]) / 2;
    unsigned char *sub = malloc(flen);
    for (size_t i = 0; i < flen; i++) sub[i] = (unsigned char)(hexval(argv[5][2 * i]) << 4 | hexval(argv[5][2 * i + 1]));
    char req[256];
    int reqlen = snprintf(req, sizeof req,
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", port);
    conn_t *conns = calloc((size_t)n, sizeof(conn_t));
    int ep = epoll_create1(0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    double started = mono_s();
    int upgraded = 0;
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("connect"); return 1; }
        send_all(fd, (unsigned char *)req, (size_t)reqlen);
        /* blocking handshake: read the 101 head, then go non-blocking */
        char head[1024]; size_t hl = 0;
        while (hl < sizeof head - 1) {
            ssize_t r = recv(fd, head + hl, sizeof head - 1 - hl, 0);
            if (r <= 0) { fprintf(stderr, "handshake failed on connection %d\n", i); return 1; }
            hl += (size_t)r; head[hl] = 0;
            char *end = strstr(head, "\r\n\r\n");
            if (end) {
                if (!strstr(head, " 101 ")) { fprintf(stderr, "not upgraded: %.80s\n", head); return 1; }
                size_t extra = hl - (size_t)(end + 4 - head);
                memcpy(conns[i].buf, end + 4, extra); conns[i].len = extra;
                break;
            }
        }
        conns[i].fd = fd; conns[i].upgraded = 1; upgraded++;
        send_all(fd, sub, flen);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    double connect_s = mono_s() - started;
    fprintf(stderr, "connected\n");
    fflush(stderr);
    double t0 = mono_s(), measure_at = t0 + warmup, end_at = measure_at + duration;
    int dropped = 0;
    double cpu_start = 0, cpu_end = 0;
    struct epoll_event evs[1024];
    while (1) {
        double t = mono_s();
        if (!measuring && t >= measure_at) { measuring = 1; cpu_start = cpu_s(); }
        if (t >= end_at) { cpu_end = cpu_s(); break; }
        int k = epoll_wait(ep, evs, 1024, 50);
        for (int j = 0; j < k; j++) {
            conn_t *c = evs[j].data.ptr;
            /* One recv per readiness event: epoll is level-triggered, so data left over makes the
             * socket ready again; a second recv just to see EAGAIN would double the syscalls. */
            ssize_t r = recv(c->fd, c->buf + c->len, BUF - c->len, 0);
            if (r > 0) {
                c->len += (size_t)r;
                if (frames(c) < 0) r = 0;
            }
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                if (!c->closed) { c->closed = 1; if (measuring) dropped++; epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); }
            }
        }
    }
    uint64_t delivered = 0, spanned = 0, silent = 0, total = 0;
    for (int i = 0; i < n; i++) {
        if (conns[i].received) { delivered += conns[i].received; spanned += conns[i].last_seq - conns[i].first_seq + 1; }
        else silent++;
        close(conns[i].fd);
    }
    for (int i = 0; i < BUCKETS; i++) total += latency[i];
    int p50 = -1, p99 = -1, mx = -1; uint64_t seen = 0;
    for (int i = 0; i < BUCKETS; i++) {
        if (!latency[i]) continue;
        seen += latency[i]; mx = i;
        if (p50 < 0 && seen * 2 > total) p50 = i;
        if (p99 < 0 && seen * 100 > total * 99) p99 = i;
    }
    printf("{\"connections\": %d, \"connect_s\": %.2f, \"messages_expected\": %llu, \"messages_delivered\": %llu, "
           "\"connections_without_messages\": %llu, \"disconnected_during_run\": %d, \"p50_ms\": %d, \"p99_ms\": %d, \"max_ms\": %d, "
           "\"client_cpu_percent\": %.1f}\n",
           upgraded, connect_s, (unsigned long long)spanned, (unsigned long long)delivered,
           (unsigned long long)silent, dropped, p50, p99, mx, 100.0 * (cpu_end - cpu_start) / duration);
    return 0;
}
