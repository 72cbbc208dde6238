/* natspub.c - bench/nats.sh's publisher: N JSON readings (D devices,
 * seq 1, 2, 3 ... per device, interleaved), L a message (one line each,
 * the same device's next seqs), published to
 * JetStream on PREFIX.<device> without a device in the line (the subject
 * names it), creating the stream PREFIX (PREFIX.>, file storage) when
 * missing, as telegate would. Publishes asynchronously
 * with at most 4096 messages unacknowledged and ends once JetStream
 * acknowledged every one; exits 1 if any was not stored.
 *
 *   natspub URL N DEVICES L PREFIX
 *
 * Prints published= and publish_ms=. */
#include <nats/nats.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_int failed;

static void on_failed(jsCtx *js, jsPubAckErr *pae, void *closure) {
  (void)js;
  (void)closure;
  if (atomic_fetch_add(&failed, 1) == 0)
    fprintf(stderr, "natspub: not stored: %s %s\n", natsStatus_GetText(pae->Err), pae->ErrText ? pae->ErrText : "");
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int fail(const char *what, natsStatus s) {
  fprintf(stderr, "natspub: %s: %s: %s\n", what, natsStatus_GetText(s), nats_GetLastError(NULL));
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: natspub URL N DEVICES LINES PREFIX\n");
    return 2;
  }
  long n = atol(argv[2]), devices = atol(argv[3]), lines = atol(argv[4]);
  const char *prefix = argv[5];
  if (n < 1 || devices < 1 || lines < 1 || lines > 100 || strlen(prefix) > 32) return 2;
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  natsStatus s = natsConnection_ConnectTo(&nc, argv[1]);
  if (s != NATS_OK) return fail("connect", s);
  jsOptions o;
  jsOptions_Init(&o);
  o.PublishAsync.MaxPending = 4096;
  /* With the consumers draining at once on a busy machine, acks may lag
   * more than the default 200 ms. */
  o.PublishAsync.StallWait = 60000;
  o.PublishAsync.ErrHandler = on_failed;
  if ((s = natsConnection_JetStream(&js, nc, &o)) != NATS_OK) return fail("JetStream", s);
  jsStreamInfo *si = NULL;
  char all[40];
  snprintf(all, sizeof all, "%s.>", prefix);
  if (js_GetStreamInfo(&si, js, prefix, NULL, NULL) == NATS_NOT_FOUND) {
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[] = {all};
    sc.Name = prefix;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    if ((s = js_AddStream(&si, js, &sc, NULL, NULL)) != NATS_OK) return fail("create the stream", s);
  }
  jsStreamInfo_Destroy(si);
  long long t0 = now_ms();
  long per = n / devices / lines * lines;
  char subject[64], body[100 * 100];
  for (long seq = 1; seq <= per; seq += lines)
    for (long d = 0; d < devices; d++) {
      snprintf(subject, sizeof subject, "%s.d%ld", prefix, d);
      int len = 0;
      for (long k = seq; k < seq + lines; k++)
        len += snprintf(body + len, sizeof body - (size_t)len,
                        "%s{\"seq\":%ld,\"ts\":%lld,\"temperature\":21.5,\"humidity\":48.2,\"battery\":87}",
                        k == seq ? "" : "\n", k, 1732590000000LL + k);
      if ((s = js_PublishAsync(js, subject, body, len, NULL)) != NATS_OK) return fail("publish", s);
    }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = 120000;
  if ((s = js_PublishAsyncComplete(js, &po)) != NATS_OK) return fail("wait for the acks", s);
  if (atomic_load(&failed)) return 1;
  printf("published=%ld\npublish_ms=%lld\n", per * devices, now_ms() - t0);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  nats_Close();
  return 0;
}
