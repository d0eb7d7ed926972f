/* printf.c - a small vsnprintf: %d %i %u %x %X %o %c %s %p %% with '-', '0', width, l/ll/z.
 * No floating point (the runtime is built with -mgeneral-regs-only). */
#include "rt.h"

struct out {
    char *buf;
    size_t size, len;
};

static void put(struct out *o, char c) {
    if (o->len + 1 < o->size) o->buf[o->len] = c;
    o->len++;
}

static void put_padded(struct out *o, const char *s, size_t n, int width, int left, char pad) {
    int fill = width > (int)n ? width - (int)n : 0;
    if (!left)
        while (fill-- > 0) put(o, pad);
    for (size_t i = 0; i < n; i++) put(o, s[i]);
    if (left)
        while (fill-- > 0) put(o, ' ');
}

static void put_number(struct out *o, uint64_t v, int neg, unsigned base, int upper, int width, int left, char pad) {
    char tmp[24];
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    int n = 0;
    do {
        tmp[n++] = digits[v % base];
        v /= base;
    } while (v);
    char s[26];
    int k = 0;
    if (neg) {
        if (pad == '0') { /* sign before the zeros */
            put(o, '-');
            width = width > 0 ? width - 1 : 0;
        } else {
            s[k++] = '-';
        }
    }
    while (n) s[k++] = tmp[--n];
    put_padded(o, s, (size_t)k, width, left, pad);
}

int rt_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) {
    struct out o = {buf, size, 0};
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            put(&o, *p);
            continue;
        }
        p++;
        int left = 0;
        char pad = ' ';
        for (;; p++) {
            if (*p == '-') left = 1;
            else if (*p == '0') pad = '0';
            else break;
        }
        int width = 0;
        while (*p >= '0' && *p <= '9') width = width * 10 + (*p++ - '0');
        int lng = 0;
        while (*p == 'l' || *p == 'z') {
            lng++;
            p++;
        }
        if (left) pad = ' ';
        switch (*p) {
        case 'd':
        case 'i': {
            int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
            put_number(&o, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, v < 0, 10, 0, width, left, pad);
            break;
        }
        case 'u':
        case 'x':
        case 'X':
        case 'o': {
            uint64_t v = lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
            unsigned base = *p == 'u' ? 10 : *p == 'o' ? 8 : 16;
            put_number(&o, v, 0, base, *p == 'X', width, left, pad);
            break;
        }
        case 'p': {
            uint64_t v = (uint64_t)va_arg(ap, void *);
            put(&o, '0');
            put(&o, 'x');
            put_number(&o, v, 0, 16, 0, width > 2 ? width - 2 : 0, left, pad);
            break;
        }
        case 'c': {
            char c = (char)va_arg(ap, int);
            put_padded(&o, &c, 1, width, left, ' ');
            break;
        }
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s) s = "(null)";
            put_padded(&o, s, strlen(s), width, left, ' ');
            break;
        }
        case '%':
            put(&o, '%');
            break;
        case '\0':
            p--;
            break;
        default:
            put(&o, '%');
            put(&o, *p);
            break;
        }
    }
    if (size) buf[o.len < size ? o.len : size - 1] = '\0';
    return (int)o.len;
}

int rt_snprintf(char *buf, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = rt_vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}
