#include "core/timeutil.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/util.h"

int64_t time_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t time_mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t time_mono_ms(void)
{
    return time_mono_us() / 1000;
}

void time_sleep_ms(int64_t ms)
{
    struct timespec ts;

    if (ms <= 0)
        return;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Seconds and µs parts with floor semantics, so negative times work too. */
static void split_us(int64_t t, time_t *sec, int *us)
{
    int64_t s = t / 1000000;
    int64_t r = t % 1000000;

    if (r < 0) {
        r += 1000000;
        s -= 1;
    }
    *sec = (time_t)s;
    *us = (int)r;
}

bool time_format_rfc3339(int64_t t, char *out, size_t cap)
{
    struct tm tm;
    time_t sec;
    int us;

    split_us(t, &sec, &us);
    if (!gmtime_r(&sec, &tm))
        return false;
    if (tm.tm_year + 1900 < 1 || tm.tm_year + 1900 > 9999)
        return false;
    return str_printf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                      tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, us);
}

static bool take_digits(const char **p, int n, int *out)
{
    int v = 0, i;

    for (i = 0; i < n; i++) {
        char c = (*p)[i];

        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

static bool take_char(const char **p, char c)
{
    if (**p != c)
        return false;
    (*p)++;
    return true;
}

static int days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

    return month == 2 && leap ? 29 : days[month - 1];
}

bool time_parse_rfc3339(const char *s, int64_t *out)
{
    const char *p = s;
    struct tm tm;
    int year, mon, day, hour, min, sec, us = 0, off = 0;
    time_t epoch;

    if (!s)
        return false;
    if (!take_digits(&p, 4, &year) || !take_char(&p, '-') || !take_digits(&p, 2, &mon) ||
        !take_char(&p, '-') || !take_digits(&p, 2, &day))
        return false;
    if (*p != 'T' && *p != 't')
        return false;
    p++;
    if (!take_digits(&p, 2, &hour) || !take_char(&p, ':') || !take_digits(&p, 2, &min) ||
        !take_char(&p, ':') || !take_digits(&p, 2, &sec))
        return false;
    if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) || hour > 23 || min > 59 ||
        sec > 60)
        return false;
    if (*p == '.') {
        int digits = 0;

        p++;
        while (*p >= '0' && *p <= '9') {
            if (digits < 6)
                us = us * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0 || digits > 9)
            return false;
        for (; digits < 6; digits++)
            us *= 10;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;

        p++;
        if (!take_digits(&p, 2, &oh) || !take_char(&p, ':') || !take_digits(&p, 2, &om) ||
            oh > 23 || om > 59)
            return false;
        off = sign * (oh * 3600 + om * 60);
    } else {
        return false;
    }
    if (*p != '\0')
        return false;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec == 60 ? 59 : sec; /* a leap second collapses onto :59 */
    epoch = timegm(&tm);
    *out = ((int64_t)epoch - off) * 1000000 + us;
    return true;
}

bool time_parse_http_date(const char *s, int64_t *out)
{
    static const char *months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char wday[4], mon[4], zone[4];
    int day, year, hour, min, sec, m, consumed = 0;
    struct tm tm;

    if (!s)
        return false;
    if (sscanf(s, "%3s, %d %3s %d %d:%d:%d %3s%n", wday, &day, mon, &year, &hour, &min, &sec, zone,
               &consumed) != 8)
        return false;
    if (s[consumed] != '\0' || strcmp(zone, "GMT") != 0)
        return false;
    for (m = 0; m < 12; m++)
        if (strcmp(mon, months[m]) == 0)
            break;
    if (m == 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60 || year < 1970 ||
        year > 9999)
        return false;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = year - 1900;
    tm.tm_mon = m;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec == 60 ? 59 : sec;
    *out = (int64_t)timegm(&tm) * 1000000;
    return true;
}

bool time_format_compact(int64_t t, char date[9], char stamp[17])
{
    struct tm tm;
    time_t sec;
    int us;

    split_us(t, &sec, &us);
    if (!gmtime_r(&sec, &tm))
        return false;
    return str_printf(date, 9, "%04d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday) &&
           str_printf(stamp, 17, "%04d%02d%02dT%02d%02d%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                      tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}
