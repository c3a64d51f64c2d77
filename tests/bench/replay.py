#!/usr/bin/env python3
"""Helpers of the replay section of tests/bench/bench.sh.

  replay.py zone NAMES ZONE SEED
      unbound local-data lines for NAMES names under ZONE, one A record
      each, with TTLs mixed from 30 s to 1 day (the TTL of each name is
      drawn at random, independently of its popularity).

  replay.py queries NAMES ZONE COUNT EXPONENT SEED
      COUNT dnsperf query lines ("NAME A"), the names drawn from a Zipf
      distribution over the NAMES names of the zone: the name of rank k
      is asked with a probability proportional to 1 / k^EXPONENT.  The
      ranks are shuffled over the names, so popularity and TTL do not
      go together.

  replay.py latency FILE
      From dnsperf -v output, "SENT ANSWERED LOST P50 P99 P99.9 MAX" with
      the latencies in milliseconds over every query sent (nearest rank),
      a lost query counting as slower than any answer ("lost").

  replay.py relay LISTEN_PORT UPSTREAM_PORT RTT_MS SECONDS
      A TCP relay on 127.0.0.1 LISTEN_PORT to 127.0.0.1 UPSTREAM_PORT
      that adds a round-trip time of RTT_MS: every chunk read on one side
      is written to the other RTT_MS/2 later, in order, and the first
      chunk towards the upstream waits one more RTT_MS, the TCP handshake
      of a distant server.  It exits after SECONDS at the latest.
"""

import asyncio
import bisect
import math
import random
import socket
import sys

# TTLs and their weights: many short-lived names (CDNs, load balancers),
# the usual 5 min to 1 h, and long-lived ones up to a day.
TTLS = [(30, 10), (60, 10), (120, 5), (300, 20), (600, 10), (1800, 10),
        (3600, 20), (14400, 5), (86400, 10)]


def name_of(i, zone):
    return "n%06d.%s." % (i, zone)


def zone(count, zone_name, seed):
    rnd = random.Random(seed)
    ttls = [t for t, _ in TTLS]
    weights = [w for _, w in TTLS]
    out = sys.stdout
    for i in range(count):
        ttl = rnd.choices(ttls, weights)[0]
        out.write('local-data: "%s %d IN A 198.51.%d.%d"\n' %
                  (name_of(i, zone_name), ttl, (i >> 8) & 255, i & 255))


def queries(count, zone_name, total, exponent, seed):
    rnd = random.Random(seed)
    ranks = list(range(count))
    rnd.shuffle(ranks)            # rank -> name index
    cum = []
    s = 0.0
    for k in range(1, count + 1):
        s += 1.0 / math.pow(k, exponent)
        cum.append(s)
    out = sys.stdout
    for _ in range(total):
        k = min(bisect.bisect_left(cum, rnd.random() * s), count - 1)
        out.write("%s A\n" % name_of(ranks[k], zone_name))


def latency(path):
    lat = []
    lost = 0
    with open(path, errors="replace") as f:
        for line in f:
            if not line.startswith("> "):
                continue
            w = line.split()
            if len(w) < 2:
                continue
            if w[1] in ("T", "I"):
                lost += 1
                continue
            try:
                lat.append(float(w[-1]) * 1000)
            except ValueError:
                pass
    lat.sort()
    n = len(lat) + lost

    def rank(q):
        if n == 0:
            return "-"
        k = max(1, math.ceil(q * n - 1e-9))
        return "%.1f" % lat[k - 1] if k <= len(lat) else "lost"

    print(n, len(lat), lost, rank(0.5), rank(0.99), rank(0.999),
          rank(1.0))


async def relay(listen_port, up_port, rtt_ms, seconds):
    loop = asyncio.get_running_loop()
    half = rtt_ms / 2000.0
    rtt = rtt_ms / 1000.0

    async def pipe(reader, writer, not_before):
        queue = asyncio.Queue()

        async def deliver():
            while True:
                at, data = await queue.get()
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        task = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(65536)
                queue.put_nowait((max(loop.time(), not_before) + half, data))
                if not data:
                    break
            await task
        finally:
            task.cancel()

    async def client(creader, cwriter):
        start = loop.time()
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1",
                                                             up_port)
        except OSError:
            cwriter.close()
            return
        try:
            await asyncio.gather(pipe(creader, uwriter, start + rtt),
                                 pipe(ureader, cwriter, 0))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            cwriter.close()
            uwriter.close()

    server = await asyncio.start_server(client, "127.0.0.1", listen_port,
                                        family=socket.AF_INET, backlog=256)
    async with server:
        await asyncio.sleep(seconds)


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "zone" and len(args) == 3:
        zone(int(args[0]), args[1], int(args[2]))
    elif cmd == "queries" and len(args) == 5:
        queries(int(args[0]), args[1], int(args[2]), float(args[3]),
                int(args[4]))
    elif cmd == "latency" and len(args) == 1:
        latency(args[0])
    elif cmd == "relay" and len(args) == 4:
        asyncio.run(relay(int(args[0]), int(args[1]), float(args[2]),
                          float(args[3])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
