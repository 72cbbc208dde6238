/* source_tcp.h - the device port: the TCP source. Devices connect and
 * send lines; one task per connection turns them into readings in the
 * telemetry channel.
 *
 * The acceptor is a tcp_server (tcp_server.h): it binds the device port,
 * runs a connection task for each device, pinned round-robin to the
 * workers, and past max_connections tells a connection {"type":"error",
 * "reason":"too_many_connections"} and closes it.
 *
 * A connection task reads in place: tg_tcp_recv shows the buffered bytes,
 * the task parses every complete line where it lies (protocol.h), and
 * sends each reading into the telemetry mpsc. When that channel is full
 * the task waits in tg_mpsc_send, stops reading its socket, the socket's
 * buffer and then the kernel's fill, and TCP slows the device down:
 * memory stays bounded whatever it sends. Reading a batch of bytes holds
 * one of the bandwidth permits (a FIFO semaphore), so at most that many
 * connections are being read at once; a connection waiting for bytes
 * holds none.
 *
 * The buffer is emptied at the end of every round (a partial line is
 * copied aside, at most max_line_bytes), so the bytes a view shows never
 * move while the task waits for channel space; see the note on views in
 * source_tcp.c.
 *
 * Bad lines are counted per reason and answered with one
 * {"type":"error","reason":...,"line":N} line, at most error_lines_per_s
 * a second (the rest are counted only); the connection goes on, and is
 * closed after error_limit bad lines in a row. A line longer than
 * max_line_bytes is skipped up to its '\n' and counted once as oversized.
 *
 * Writes to the device (error lines, health requests) are made by the
 * connection's task only, never while it holds a bandwidth permit, each
 * with a deadline: a device that does not read its socket makes only its
 * own task wait, and is disconnected after write_timeout_ms.
 *
 * Health: requests for a device arrive in its connection's outbox (see
 * registry.h); the task writes {"type":"health","id":N} and keeps the
 * reply sender until the device's {"type":"health","id":N,...} line comes
 * back, which completes the oneshot; it drops the sender (the checker
 * sees "dropped") when the connection ends first.
 *
 * Shutdown: when the token fires, the acceptor closes the listener; every
 * connection detaches from the registry and reads what its device already
 * sent - until the device hangs up or drain_ms have passed - then
 * closes. Nothing is written to the device then (see drain in
 * source_tcp.c). The acceptor joins them all (no grace: the drain bounds
 * each one) and drops the last telemetry sender. */
#ifndef TELEGATE_SOURCE_TCP_H
#define TELEGATE_SOURCE_TCP_H

#include "source.h"

/* The device port: wanted when cfg->listen_host is set (it is by default). */
extern const source_kind source_tcp;

#endif
