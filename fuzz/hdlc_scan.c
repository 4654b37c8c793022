/*
 * libFuzzer target: tr_hdlc_scan on any bytes.  Oracles: the spans are in order, inside the
 * buffer, non-empty, free of flags and framed by flags; garbage and rest are where the first
 * and last flags are; a callback asking to stop stops it.
 */
#include "guard.h"
#include "hdlc.h"

struct seen {
    const uint8_t *data;
    size_t len, last_end, count, stop_after;
};

static int span(void *ctx, size_t start, size_t end)
{
    struct seen *s = ctx;
    CHECK(start < end && end < s->len && start >= 1 && start > s->last_end);
    CHECK(s->data[start - 1] == 0x7E && s->data[end] == 0x7E && !memchr(s->data + start, 0x7E, end - start));
    s->last_end = end;
    return ++s->count == s->stop_after;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t stop_after = (size_t)take(&data, &size, 1);
    struct guarded g = guarded_at(0, data, size, 0);
    struct seen s = {g.p, size, 0, 0, 0};
    size_t rest, garbage;
    CHECK(tr_hdlc_scan(g.p, size, span, &s, &rest, &garbage) == 0);
    const uint8_t *first = memchr(data, 0x7E, size);
    CHECK(garbage == (first ? (size_t)(first - data) : size));
    CHECK(rest == size ? !first : (data[rest] == 0x7E && !memchr(data + rest + 1, 0x7E, size - rest - 1)));
    if (s.count && stop_after) {
        struct seen again = {g.p, size, 0, 0, stop_after};
        int stopped = tr_hdlc_scan(g.p, size, span, &again, &rest, &garbage);
        CHECK(stop_after > s.count ? stopped == 0 : (stopped == -1 && again.count == stop_after));
    }
    guarded_free(&g);
    return 0;
}
