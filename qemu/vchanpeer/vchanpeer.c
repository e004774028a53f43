/*
 * vchanpeer: a dom0 test peer for Gozen's vchan driver built on Xen's real
 * libxenvchan, so interop tests talk to the reference implementation.
 *
 * Usage:
 *   vchanpeer server DOMID PATH [READMIN WRITEMIN] [OPTIONS]
 *       libxenvchan_server_init(DOMID, PATH, READMIN, WRITEMIN): grants the
 *       rings to domain DOMID and writes PATH/ring-ref and
 *       PATH/event-channel; waits for the client, then runs the data modes.
 *   vchanpeer client DOMID PATH [OPTIONS]
 *       libxenvchan_client_init(DOMID, PATH): DOMID is the server's domain.
 *   vchanpeer bench [OPTIONS]
 *       forks: the parent is a server and the child a client, both in this
 *       domain, over PATH (default /local/domain/0/data/vchanpeer-bench),
 *       and moves -size bytes server->client, then client->server, then both
 *       ways at once, in -chunk byte writes; prints one BENCH line a phase.
 *
 * Data options (server and client):
 *   -send N     write N bytes of the stream (see below)
 *   -recv N     read N bytes and check them against the stream
 *               (-send and -recv together run both directions at once)
 *   -echo       write back everything read, until the peer closes
 *   -seed S     stream seed (default 1) of what this side sends and, unless
 *               -rseed is given, of what it expects to receive
 *   -rseed S    stream seed the received data is checked against
 *   -nocheck    move bytes without generating or checksumming them (the
 *               sender repeats one chunk of the stream; crc and expect are
 *               reported as 0): the transport's rate without the CPU cost
 *               of the checks
 *   -chunk N    bytes per libxenvchan_write/read call (default 65536)
 *   -timeout S  give up after S seconds without finishing (default 120)
 *   -hold S     after the data modes, keep the vchan open until the peer
 *               has read everything written (or closes), at most S seconds
 *               (default 10)
 *   -waiteof    after the data modes, wait (up to -timeout) for the peer to
 *               close, reading and discarding what it still sends, and
 *               report "eof=1 extra=N": the peer's close is seen as
 *               end-of-stream
 *
 * Hostile options (server and client): test a peer's checks by breaking
 * the protocol through the shared page, which this side maps or grants.
 *   -hostile prod   write -after bytes, then move this side's producer
 *                   index 3 ring sizes past the consumer
 *   -hostile cons   read -after bytes, then move this side's consumer index
 *                   12345 bytes past the producer
 *   -hostile live   write -after bytes, then set this side's live byte to 7
 *   -hostile order  (server) before the client connects, set left_order to 25
 *   -hostile grant  (server, read ring of 4 KiB or more) before the client
 *                   connects, replace the first grant reference with garbage
 *   -after N        bytes moved before the corruption (default 1M)
 * After corrupting, the peer notifies and waits (up to 5 s) for the other
 * side to mark itself closed, then reports
 *   VCHANPEER role=R hostile=MODE detected=1|0 ms=T
 * (ms: from the corruption to the other side's live byte reading 0).
 * Bench options: -size N (default 64 MiB), -chunk N, -ring N (READMIN and
 * WRITEMIN, default 65536), -path P, -seed S, -nocheck. The bench also
 * reports phase=cpu: the rate at which this CPU generates and checksums
 * the stream alone (the sender's plus the receiver's per-byte work), since
 * server and client share dom0's vCPUs.
 * N accepts the suffixes k, K (KiB), m, M (MiB).
 *
 * The stream of seed S: a 64-bit xorshift state x = S (0 means
 * 0x9e3779b97f4a7c15); for every 8 bytes, x ^= x << 13; x ^= x >> 7;
 * x ^= x << 17; then the 8 bytes of x, little-endian. Checksums are CRC-32
 * (IEEE 802.3, as Go's hash/crc32.ChecksumIEEE) of the bytes moved.
 *
 * Output: one line per event, words key=value, prefixed "VCHANPEER":
 *   VCHANPEER connected role=R domid=D path=P read_ring=B write_ring=B
 *   VCHANPEER sent=N crc=0x... secs=S MBps=M MiBps=M
 *   VCHANPEER recv=N crc=0x... expect=0x... ok=1|0 secs=S MBps=M MiBps=M
 *   VCHANPEER echoed=N crc=0x... secs=S MBps=M MiBps=M
 *   VCHANPEER role=R waits=N wait_timeouts=N wait_max_ms=T  (event waits of
 *             the data modes; a timeout is a 200 ms wait with no event)
 *   VCHANPEER closed role=R peer_closed=0|1
 *   VCHANPEER error=WORD ...             (and a non-zero exit status)
 *   VCHANPEER bench phase=P bytes=N chunk=C ring=R check=1|0
 *             crc_sent=0x... crc_recv=0x... ok=1|0 secs=S MBps=M MiBps=M
 *             (phase duplex: crc_sent and crc_recv are "s2c,c2s" pairs)
 * MBps counts 10^6 bytes, MiBps 2^20; secs for a receiver run from its first
 * byte to its last, for a sender from its first write to its last.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libxenvchan.h>

/* ---- stream and checksum ---- */

struct stream {
	uint64_t x;
	uint8_t word[8];
	int used; /* bytes of word already emitted (8: none left) */
};

static void stream_init(struct stream *s, uint64_t seed)
{
	s->x = seed ? seed : 0x9e3779b97f4a7c15ULL;
	s->used = 8;
}

static inline uint64_t stream_step(struct stream *s)
{
	uint64_t x = s->x;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	s->x = x;
	return x;
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* stream_fill writes the next n bytes of the stream to p. */
static void stream_fill(struct stream *s, uint8_t *p, size_t n)
{
	while (n > 0 && s->used < 8) {
		*p++ = s->word[s->used++];
		n--;
	}
	while (n >= 8) {
		put_le64(p, stream_step(s));
		p += 8;
		n -= 8;
	}
	if (n > 0) {
		put_le64(s->word, stream_step(s));
		memcpy(p, s->word, n);
		s->used = (int)n;
	}
}

static uint32_t crc_table[8][256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

/* crc_update continues a CRC-32 over p; start with crc = 0. */
static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n)
{
	uint32_t c = ~crc;
	while (n > 0 && ((uintptr_t)p & 7)) {
		c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
		n--;
	}
	while (n >= 8) {
		uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
		uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
		c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
		    crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
		    crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
		    crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
		p += 8;
		n -= 8;
	}
	while (n-- > 0)
		c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
	return ~c;
}

/* stream_crc is the CRC-32 of the first n bytes of the stream of seed. */
static uint32_t stream_crc(uint64_t seed, uint64_t n, uint8_t *buf, size_t bufsz)
{
	struct stream s;
	uint32_t crc = 0;
	stream_init(&s, seed);
	while (n > 0) {
		size_t k = n < bufsz ? (size_t)n : bufsz;
		stream_fill(&s, buf, k);
		crc = crc_update(crc, buf, k);
		n -= k;
	}
	return crc;
}

/* ---- output ---- */

static const char *role = "peer";

static void say(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n = snprintf(line, sizeof line, "VCHANPEER ");
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof line - n, fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof line - 1)
		n = sizeof line - 2;
	line[n++] = '\n';
	/* one write a line, so forked peers do not interleave mid-line */
	if (write(1, line, n) < 0) {
		/* nothing useful to do */
	}
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double mbps(uint64_t n, double secs) { return secs > 0 ? n / secs / 1e6 : 0; }
static double mibps(uint64_t n, double secs) { return secs > 0 ? n / secs / 1048576.0 : 0; }

/* ---- the session: send, receive and echo over one vchan ---- */

struct opts {
	uint64_t send, recv;
	int echo, nocheck, waiteof;
	const char *hostile;
	uint64_t after;
	uint64_t seed, rseed;
	int rseed_set;
	size_t chunk;
	double timeout, hold;
};

struct result {
	uint64_t sent, recvd, echoed;
	uint32_t sent_crc, recv_crc, expect_crc, echo_crc;
	double send_secs, recv_secs, echo_secs;
	int ok; /* everything asked for was moved, and received data matched */
	int peer_closed;
};

/* waitev blocks until the vchan's event channel fires or ms pass; it
 * returns -1 on error. */
static uint64_t nwaits, nwait_timeouts; /* waitev calls, and those that timed out */
static double wait_max;                 /* the longest waitev, seconds */

static int waitev(struct libxenvchan *ctrl, int ms)
{
	struct pollfd pfd = {.fd = libxenvchan_fd_for_select(ctrl), .events = POLLIN};
	double t0 = now();
	int r = poll(&pfd, 1, ms);
	double t = now() - t0;
	nwaits++;
	if (r == 0)
		nwait_timeouts++;
	if (t > wait_max)
		wait_max = t;
	if (r < 0)
		return errno == EINTR ? 0 : -1;
	if (r > 0 && libxenvchan_wait(ctrl) < 0)
		return -1;
	return 0;
}

static void report(const struct opts *o, const struct result *r)
{
	if (o->send)
		say("role=%s sent=%" PRIu64 " crc=0x%08x secs=%.3f MBps=%.1f MiBps=%.1f", role, r->sent,
		    r->sent_crc, r->send_secs, mbps(r->sent, r->send_secs), mibps(r->sent, r->send_secs));
	if (o->recv)
		say("role=%s recv=%" PRIu64 " crc=0x%08x expect=0x%08x ok=%d secs=%.3f MBps=%.1f MiBps=%.1f", role,
		    r->recvd, r->recv_crc, r->expect_crc, r->recvd == o->recv && r->recv_crc == r->expect_crc,
		    r->recv_secs, mbps(r->recvd, r->recv_secs), mibps(r->recvd, r->recv_secs));
	if (o->echo)
		say("role=%s echoed=%" PRIu64 " crc=0x%08x secs=%.3f MBps=%.1f MiBps=%.1f", role, r->echoed,
		    r->echo_crc, r->echo_secs, mbps(r->echoed, r->echo_secs), mibps(r->echoed, r->echo_secs));
	/* event waits of the session: timeouts mean a notification the
	 * other side owed never came (the loop then looks again anyway) */
	say("role=%s waits=%" PRIu64 " wait_timeouts=%" PRIu64 " wait_max_ms=%.1f", role, nwaits, nwait_timeouts,
	    wait_max * 1000);
}

/* session runs the data modes of o on an open, connected vchan. */
static int session(struct libxenvchan *ctrl, const struct opts *o, struct result *r)
{
	size_t chunk = o->chunk;
	uint8_t *sbuf = malloc(chunk), *rbuf = malloc(chunk);
	size_t slen = 0, soff = 0;   /* pending send data in sbuf */
	size_t elen = 0, eoff = 0;   /* pending echo data in rbuf */
	uint64_t send_left = o->send, recv_left = o->recv;
	int reading = o->recv > 0 || o->echo, eof = 0;
	struct stream s;
	double t0 = now(), idle_since = t0;
	double send_start = 0, send_end = 0, recv_start = 0, recv_end = 0;
	int err = 0;

	memset(r, 0, sizeof *r);
	nwaits = nwait_timeouts = 0;
	wait_max = 0;
	if (!sbuf || !rbuf) {
		say("role=%s error=nomem", role);
		return -1;
	}
	if (o->recv && !o->nocheck)
		r->expect_crc = stream_crc(o->rseed_set ? o->rseed : o->seed, o->recv, rbuf, chunk);
	stream_init(&s, o->seed);
	if (o->nocheck)
		stream_fill(&s, sbuf, chunk);
	ctrl->blocking = 0;
	for (;;) {
		int progress = 0;
		/* receive (or collect data to echo) */
		if (reading && !eof && elen == 0) {
			size_t want = chunk;
			if (!o->echo && recv_left < want)
				want = (size_t)recv_left;
			int n = libxenvchan_read(ctrl, rbuf, want);
			if (n < 0) {
				eof = 1;
				r->peer_closed = 1;
			} else if (n > 0) {
				double t = now();
				if (recv_start == 0)
					recv_start = t;
				recv_end = t;
				progress = 1;
				if (o->echo) {
					r->echoed += n;
					r->echo_crc = crc_update(r->echo_crc, rbuf, n);
					elen = n;
					eoff = 0;
				} else {
					r->recvd += n;
					recv_left -= n;
					if (!o->nocheck)
						r->recv_crc = crc_update(r->recv_crc, rbuf, n);
					if (recv_left == 0)
						reading = 0;
				}
			}
		}
		/* echo back */
		if (elen > 0) {
			int n = libxenvchan_write(ctrl, rbuf + eoff, elen - eoff);
			if (n < 0) {
				say("role=%s error=peer-closed-during-echo echoed=%" PRIu64, role, r->echoed);
				err = -1;
				break;
			}
			if (n > 0) {
				progress = 1;
				eoff += n;
				if (eoff == elen)
					elen = eoff = 0;
			}
		}
		/* send */
		if (send_left > 0 || soff < slen) {
			if (soff == slen) {
				slen = send_left < chunk ? (size_t)send_left : chunk;
				soff = 0;
				if (!o->nocheck) {
					stream_fill(&s, sbuf, slen);
					r->sent_crc = crc_update(r->sent_crc, sbuf, slen);
				}
				send_left -= slen;
			}
			if (send_start == 0)
				send_start = now();
			int n = libxenvchan_write(ctrl, sbuf + soff, slen - soff);
			if (n < 0) {
				say("role=%s error=peer-closed-during-send sent=%" PRIu64, role, r->sent);
				err = -1;
				break;
			}
			if (n > 0) {
				progress = 1;
				soff += n;
				r->sent += n;
				if (send_left == 0 && soff == slen)
					send_end = now();
			}
		}
		if (eof && !o->echo && reading) {
			say("role=%s error=eof recv=%" PRIu64 " want=%" PRIu64, role, r->recvd, o->recv);
			err = -1;
			break;
		}
		int sending = send_left > 0 || soff < slen;
		if (!sending && elen == 0 && (!reading || eof))
			break;
		if (progress) {
			idle_since = now();
			continue;
		}
		if (now() - idle_since > o->timeout) {
			say("role=%s error=timeout sent=%" PRIu64 " recv=%" PRIu64 " echoed=%" PRIu64, role, r->sent,
			    r->recvd, r->echoed);
			err = -1;
			break;
		}
		if (waitev(ctrl, 200) < 0) {
			say("role=%s error=wait errno=%d", role, errno);
			err = -1;
			break;
		}
	}
	r->send_secs = send_end > send_start ? send_end - send_start : 0;
	r->recv_secs = recv_end > recv_start ? recv_end - recv_start : 0;
	r->echo_secs = r->recv_secs;
	r->ok = err == 0 && r->sent == o->send && r->recvd == o->recv && r->recv_crc == r->expect_crc;
	free(sbuf);
	free(rbuf);
	return err;
}

/* hold keeps the vchan open until the peer has consumed everything this
 * side wrote, or the peer closes, or secs pass: libxenvchan_close on the
 * server side withdraws the grants, and a closing side's unread data is
 * only safe with a peer that drains after close. */
static void hold(struct libxenvchan *ctrl, double secs)
{
	double end = now() + secs;
	while (now() < end) {
		if (libxenvchan_is_open(ctrl) == 0)
			return;
		if (libxenvchan_buffer_space(ctrl) >= (1 << ctrl->write.order))
			return;
		/* data the peer still sends is discarded */
		uint8_t sink[4096];
		while (libxenvchan_read(ctrl, sink, sizeof sink) > 0) {
		}
		if (waitev(ctrl, 100) < 0)
			return;
	}
}

/* waiteof waits for the peer to close, discarding what it still sends. */
static void waiteof(struct libxenvchan *ctrl, double secs)
{
	double t0 = now(), end = t0 + secs;
	uint64_t extra = 0;
	uint8_t sink[4096];
	ctrl->blocking = 0;
	for (;;) {
		int n = libxenvchan_read(ctrl, sink, sizeof sink);
		if (n < 0) {
			say("role=%s eof=1 extra=%" PRIu64 " secs=%.3f", role, extra, now() - t0);
			return;
		}
		if (n > 0) {
			extra += n;
			continue;
		}
		if (now() > end) {
			say("role=%s eof=0 error=timeout-waiting-for-eof extra=%" PRIu64, role, extra);
			return;
		}
		if (waitev(ctrl, 100) < 0) {
			say("role=%s eof=0 error=wait errno=%d", role, errno);
			return;
		}
	}
}

/* peer_live is the other side's live byte. */
static int peer_live(struct libxenvchan *ctrl)
{
	return ctrl->is_server ? ctrl->ring->cli_live : ctrl->ring->srv_live;
}

/* corrupt_setup damages the page before a client connects (server only);
 * it returns 1 for the set-up modes. */
static int corrupt_setup(struct libxenvchan *ctrl, const char *mode)
{
	if (!mode)
		return 0;
	if (!strcmp(mode, "order")) {
		ctrl->ring->left_order = 25;
	} else if (!strcmp(mode, "grant")) {
		if (ctrl->read.order < 12) {
			say("role=%s error=hostile-grant-needs-a-granted-read-ring", role);
			return 1;
		}
		ctrl->ring->grants[0] = 0x7ffffff0u;
	} else {
		return 0;
	}
	__sync_synchronize();
	return 1;
}

/* detect waits for the other side to mark itself closed after a
 * corruption made at t0, and reports how long it took. */
static int detect(struct libxenvchan *ctrl, const char *mode, double t0)
{
	double end = t0 + 5;
	while (peer_live(ctrl) != 0 && now() < end)
		if (waitev(ctrl, 20) < 0)
			break;
	int ok = peer_live(ctrl) == 0;
	say("role=%s hostile=%s detected=%d ms=%.1f", role, mode, ok, (now() - t0) * 1000);
	return ok ? 0 : -1;
}

/* hostile_run moves -after bytes, then breaks the protocol (see the
 * header) and waits for the other side to notice. */
static int hostile_run(struct libxenvchan *ctrl, const struct opts *o)
{
	const char *mode = o->hostile;
	size_t chunk = o->chunk;
	uint8_t *buf = malloc(chunk);
	struct stream s;
	uint64_t left = o->after;
	int reading = !strcmp(mode, "cons");
	if (!buf)
		return -1;
	if (!reading && strcmp(mode, "prod") && strcmp(mode, "live")) {
		say("role=%s error=unknown-hostile-mode mode=%s", role, mode);
		free(buf);
		return -1;
	}
	stream_init(&s, o->seed);
	ctrl->blocking = 1;
	while (left > 0) {
		size_t k = left < chunk ? (size_t)left : chunk;
		int n;
		if (reading) {
			n = libxenvchan_read(ctrl, buf, k);
		} else {
			stream_fill(&s, buf, k);
			n = libxenvchan_write(ctrl, buf, k);
		}
		if (n <= 0) {
			say("role=%s error=hostile-before-corruption n=%d", role, n);
			free(buf);
			return -1;
		}
		left -= n;
	}
	free(buf);
	double t0 = now();
	if (!strcmp(mode, "prod"))
		ctrl->write.shr->prod = ctrl->write.shr->cons + (3u << ctrl->write.order);
	else if (reading)
		ctrl->read.shr->cons = ctrl->read.shr->prod + 12345;
	else if (ctrl->is_server)
		ctrl->ring->srv_live = 7;
	else
		ctrl->ring->cli_live = 7;
	__sync_synchronize();
	xenevtchn_notify(ctrl->event, ctrl->event_port);
	return detect(ctrl, mode, t0);
}

/* ---- connection set-up ---- */

static double hostile_t0; /* when corrupt_setup ran, 0 if it did not */

static struct libxenvchan *serve(int domid, const char *path, size_t rmin, size_t wmin, double timeout,
				 const char *hostile)
{
	struct libxenvchan *ctrl = libxenvchan_server_init(NULL, domid, path, rmin, wmin);
	if (!ctrl) {
		say("role=server error=server_init errno=%d (%s) domid=%d path=%s", errno, strerror(errno), domid, path);
		return NULL;
	}
	if (corrupt_setup(ctrl, hostile))
		hostile_t0 = now();
	say("listening role=server domid=%d path=%s read_ring=%d write_ring=%d", domid, path,
	    1 << ctrl->read.order, 1 << ctrl->write.order);
	double end = now() + timeout;
	while (libxenvchan_is_open(ctrl) == 2) {
		if (now() > end) {
			say("role=server error=timeout-waiting-for-client path=%s", path);
			libxenvchan_close(ctrl);
			return NULL;
		}
		if (waitev(ctrl, 100) < 0) {
			say("role=server error=wait errno=%d", errno);
			libxenvchan_close(ctrl);
			return NULL;
		}
	}
	return ctrl;
}

static struct libxenvchan *connect_to(int domid, const char *path, double timeout)
{
	double end = now() + timeout;
	for (;;) {
		struct libxenvchan *ctrl = libxenvchan_client_init(NULL, domid, path);
		if (ctrl)
			return ctrl;
		if (now() > end) {
			say("role=client error=client_init errno=%d (%s) domid=%d path=%s", errno, strerror(errno), domid,
			    path);
			return NULL;
		}
		usleep(100 * 1000);
	}
}

/* ---- command line ---- */

static uint64_t parse_size(const char *s)
{
	char *end;
	uint64_t v = strtoull(s, &end, 0);
	switch (*end) {
	case 'k':
	case 'K':
		v <<= 10;
		break;
	case 'm':
	case 'M':
		v <<= 20;
		break;
	case 'g':
	case 'G':
		v <<= 30;
		break;
	case 0:
		break;
	default:
		fprintf(stderr, "vchanpeer: bad size %s\n", s);
		exit(2);
	}
	return v;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: vchanpeer server DOMID PATH [READMIN WRITEMIN] [-send N] [-recv N] [-echo] [-seed S]\n"
		"                 [-rseed S] [-nocheck] [-chunk N] [-timeout S] [-hold S] [-waiteof]\n"
		"                 [-hostile prod|cons|live|order|grant] [-after N]\n"
		"       vchanpeer client DOMID PATH [same options]\n"
		"       vchanpeer bench [-size N] [-chunk N] [-ring N] [-path P] [-seed S] [-nocheck] [-timeout S]\n");
	exit(2);
}

struct bench_opts {
	uint64_t size, ring;
	const char *path;
};

/* parse_opts reads the options from argv[i...]; it exits on errors. */
static void parse_opts(int argc, char **argv, int i, struct opts *o, struct bench_opts *b)
{
	for (; i < argc; i++) {
		const char *a = argv[i];
		int more = i + 1 < argc;
		if (!strcmp(a, "-echo"))
			o->echo = 1;
		else if (!strcmp(a, "-send") && more)
			o->send = parse_size(argv[++i]);
		else if (!strcmp(a, "-recv") && more)
			o->recv = parse_size(argv[++i]);
		else if (!strcmp(a, "-nocheck"))
			o->nocheck = 1;
		else if (!strcmp(a, "-waiteof"))
			o->waiteof = 1;
		else if (!strcmp(a, "-hostile") && more)
			o->hostile = argv[++i];
		else if (!strcmp(a, "-after") && more)
			o->after = parse_size(argv[++i]);
		else if (!strcmp(a, "-seed") && more)
			o->seed = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(a, "-rseed") && more)
			o->rseed = strtoull(argv[++i], NULL, 0), o->rseed_set = 1;
		else if (!strcmp(a, "-chunk") && more)
			o->chunk = parse_size(argv[++i]);
		else if (!strcmp(a, "-timeout") && more)
			o->timeout = atof(argv[++i]);
		else if (!strcmp(a, "-hold") && more)
			o->hold = atof(argv[++i]);
		else if (b && !strcmp(a, "-size") && more)
			b->size = parse_size(argv[++i]);
		else if (b && !strcmp(a, "-ring") && more)
			b->ring = parse_size(argv[++i]);
		else if (b && !strcmp(a, "-path") && more)
			b->path = argv[++i];
		else
			usage();
	}
	if (o->chunk == 0)
		usage();
	if (o->echo && (o->send || o->recv)) {
		fprintf(stderr, "vchanpeer: -echo excludes -send and -recv\n");
		exit(2);
	}
}

static int peer_main(int is_server, int argc, char **argv, struct opts *o)
{
	if (argc < 4)
		usage();
	int domid = atoi(argv[2]);
	const char *path = argv[3];
	int i = 4;
	size_t rmin = 0, wmin = 0;
	if (is_server && argc >= 6 && argv[4][0] != '-' && argv[5][0] != '-') {
		rmin = parse_size(argv[4]);
		wmin = parse_size(argv[5]);
		i = 6;
	}
	parse_opts(argc, argv, i, o, NULL);
	role = is_server ? "server" : "client";
	struct libxenvchan *ctrl = is_server ? serve(domid, path, rmin, wmin, o->timeout, o->hostile)
					     : connect_to(domid, path, o->timeout);
	if (!ctrl)
		return 1;
	if (hostile_t0 > 0) {
		/* the client gave up on the damaged page: it marks itself
		 * closed without ever connecting */
		int err = detect(ctrl, o->hostile, hostile_t0);
		libxenvchan_close(ctrl);
		return err ? 1 : 0;
	}
	if (o->hostile) {
		say("connected role=%s domid=%d path=%s read_ring=%d write_ring=%d", role, domid, path,
		    1 << ctrl->read.order, 1 << ctrl->write.order);
		int err = hostile_run(ctrl, o);
		libxenvchan_close(ctrl);
		return err ? 1 : 0;
	}
	say("connected role=%s domid=%d path=%s read_ring=%d write_ring=%d", role, domid, path, 1 << ctrl->read.order,
	    1 << ctrl->write.order);
	struct result r;
	int err = session(ctrl, o, &r);
	report(o, &r);
	if (o->waiteof && !r.peer_closed)
		waiteof(ctrl, o->timeout);
	else if (!r.peer_closed)
		hold(ctrl, o->hold);
	say("closed role=%s peer_closed=%d ok=%d", role, libxenvchan_is_open(ctrl) == 0, r.ok);
	libxenvchan_close(ctrl);
	return err == 0 && r.ok ? 0 : 1;
}

/* ---- bench: server and client in this domain ---- */

enum { PHASES = 3 };
static const char *phase_names[PHASES] = {"s2c", "c2s", "duplex"};

/* phase_opts gives the data modes of one side in phase p. */
static struct opts phase_opts(const struct opts *base, int server, int p, uint64_t size)
{
	struct opts o = *base;
	o.send = o.recv = 0;
	o.echo = 0;
	switch (p) {
	case 0:
		if (server)
			o.send = size;
		else
			o.recv = size;
		o.seed = base->seed;
		o.rseed_set = 0;
		break;
	case 1:
		if (server)
			o.recv = size;
		else
			o.send = size;
		o.seed = base->seed + 1;
		o.rseed_set = 0;
		break;
	case 2: /* each direction its own stream */
		o.send = o.recv = size;
		o.seed = base->seed + (server ? 2 : 3);
		o.rseed = base->seed + (server ? 3 : 2);
		o.rseed_set = 1;
		break;
	}
	return o;
}

static int bench_main(int argc, char **argv, struct opts *o)
{
	struct bench_opts b = {.size = 64 << 20, .ring = 65536, .path = "/local/domain/0/data/vchanpeer-bench"};
	parse_opts(argc, argv, 2, o, &b);
	int pipefd[2];
	if (pipe(pipefd) < 0) {
		say("role=bench error=pipe errno=%d", errno);
		return 1;
	}
	double t0 = now();
	pid_t pid = fork();
	if (pid < 0) {
		say("role=bench error=fork errno=%d", errno);
		return 1;
	}
	if (pid == 0) {
		close(pipefd[0]);
		role = "client";
		struct libxenvchan *ctrl = connect_to(0, b.path, o->timeout);
		if (!ctrl)
			_exit(1);
		struct result res[PHASES];
		int err = 0;
		for (int p = 0; p < PHASES && !err; p++) {
			struct opts po = phase_opts(o, 0, p, b.size);
			err = session(ctrl, &po, &res[p]);
			report(&po, &res[p]);
			if (write(pipefd[1], &res[p], sizeof res[p]) != sizeof res[p])
				err = -1;
		}
		hold(ctrl, o->hold);
		libxenvchan_close(ctrl);
		_exit(err ? 1 : 0);
	}
	close(pipefd[1]);
	role = "server";
	struct libxenvchan *ctrl = serve(0, b.path, b.ring, b.ring, o->timeout, NULL);
	if (!ctrl) {
		kill(pid, 9);
		waitpid(pid, NULL, 0);
		return 1;
	}
	say("connected role=server domid=0 path=%s read_ring=%d write_ring=%d setup_secs=%.3f", b.path,
	    1 << ctrl->read.order, 1 << ctrl->write.order, now() - t0);
	int fail = 0;
	for (int p = 0; p < PHASES; p++) {
		struct opts po = phase_opts(o, 1, p, b.size);
		struct result sr, cr;
		int err = session(ctrl, &po, &sr);
		report(&po, &sr);
		if (read(pipefd[0], &cr, sizeof cr) != sizeof cr) {
			say("role=bench error=client-result phase=%s", phase_names[p]);
			fail = 1;
			break;
		}
		/* the rate of a phase is the receiving side's (from its first byte
		 * to its last); duplex reports both directions together */
		char crc_sent[32], crc_recv[32];
		double secs;
		uint64_t bytes = b.size;
		int ok = !err && sr.ok && cr.ok;
		switch (p) {
		case 0:
			snprintf(crc_sent, sizeof crc_sent, "0x%08x", sr.sent_crc);
			snprintf(crc_recv, sizeof crc_recv, "0x%08x", cr.recv_crc);
			secs = cr.recv_secs;
			break;
		case 1:
			snprintf(crc_sent, sizeof crc_sent, "0x%08x", cr.sent_crc);
			snprintf(crc_recv, sizeof crc_recv, "0x%08x", sr.recv_crc);
			secs = sr.recv_secs;
			break;
		default:
			snprintf(crc_sent, sizeof crc_sent, "0x%08x,0x%08x", sr.sent_crc, cr.sent_crc);
			snprintf(crc_recv, sizeof crc_recv, "0x%08x,0x%08x", cr.recv_crc, sr.recv_crc);
			secs = sr.recv_secs > cr.recv_secs ? sr.recv_secs : cr.recv_secs;
			bytes = 2 * b.size;
			break;
		}
		ok = ok && !strcmp(crc_sent, crc_recv);
		say("bench phase=%s bytes=%" PRIu64 " chunk=%zu ring=%" PRIu64 " check=%d crc_sent=%s crc_recv=%s ok=%d "
		    "secs=%.3f MBps=%.1f MiBps=%.1f",
		    phase_names[p], bytes, o->chunk, b.ring, !o->nocheck, crc_sent, crc_recv, ok, secs, mbps(bytes, secs),
		    mibps(bytes, secs));
		if (!ok) {
			fail = 1;
			break;
		}
	}
	int status = 0;
	hold(ctrl, fail ? 0 : o->hold);
	libxenvchan_close(ctrl);
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail = 1;
	if (!o->nocheck) {
		/* the per-byte work of a checked transfer without the transport:
		 * generate and checksum (sender), checksum (receiver) */
		uint8_t *buf = malloc(o->chunk);
		struct stream s;
		uint32_t c1 = 0, c2 = 0;
		double t = now();
		stream_init(&s, o->seed);
		for (uint64_t n = 0; buf && n < b.size; n += o->chunk) {
			stream_fill(&s, buf, o->chunk);
			c1 = crc_update(c1, buf, o->chunk);
			c2 = crc_update(c2, buf, o->chunk);
		}
		double secs = now() - t;
		say("bench phase=cpu bytes=%" PRIu64 " chunk=%zu crc=0x%08x ok=%d secs=%.3f MBps=%.1f MiBps=%.1f", b.size,
		    o->chunk, c1, c1 == c2, secs, mbps(b.size, secs), mibps(b.size, secs));
		free(buf);
	}
	say("bench done ok=%d", !fail);
	return fail;
}

int main(int argc, char **argv)
{
	struct opts o = {.seed = 1, .chunk = 65536, .timeout = 120, .hold = 10, .after = 1 << 20};
	crc_init();
	if (argc < 2)
		usage();
	if (!strcmp(argv[1], "server"))
		return peer_main(1, argc, argv, &o);
	if (!strcmp(argv[1], "client"))
		return peer_main(0, argc, argv, &o);
	if (!strcmp(argv[1], "bench")) {
		o.hold = 5;
		return bench_main(argc, argv, &o);
	}
	usage();
	return 2;
}
