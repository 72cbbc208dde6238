/* hello.c - the smallest libtg program: a task sends three numbers over a
 * bounded channel to the main task, which prints them. It is also how
 * tests/test-install.sh checks an installed libtg: built with nothing but
 *   cc hello.c $(pkg-config --cflags --libs tg)  */
#include <tg/tg.h>

#include <stdio.h>

static void *producer(void *arg) {
  tg_mpsc_tx *tx = arg;
  for (int i = 1; i <= 3; i++) tg_mpsc_send(tx, &i); /* waits while the channel is full */
  tg_mpsc_tx_drop(tx);                               /* the receiver then gets TG_ECLOSED */
  return NULL;
}

static char setup_failed[] = "cannot make the channel or the task";

static void *main_task(void *arg) {
  (void)arg;
  tg_mpsc_tx *tx;
  tg_mpsc_rx *rx;
  if (tg_mpsc_new(&(tg_mpsc_opts){.capacity = 2, .elem_size = sizeof(int)}, &tx, &rx) != 0) return setup_failed;
  tg_task *task;
  if (tg_spawn(&task, producer, tx, NULL) != 0) {
    tg_mpsc_tx_drop(tx);
    tg_mpsc_rx_drop(rx);
    return setup_failed;
  }
  printf("hello from libtg %s:", tg_version_string());
  for (int v; tg_mpsc_recv(rx, &v) == 0;) printf(" got %d", v);
  printf("\n");
  tg_mpsc_rx_drop(rx);
  tg_task_join(task, NULL);
  return NULL;
}

int main(void) {
  void *failure = NULL;
  int r = tg_run(NULL, main_task, NULL, &failure);
  if (r != 0 || failure) {
    fprintf(stderr, "%s\n", failure ? (char *)failure : tg_strerror(r));
    return 1;
  }
  return 0;
}
