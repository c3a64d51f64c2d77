/*
 * A tiny header-only TAP (Test Anything Protocol) producer.
 *
 *	plan(n);			or plan(0) and done_testing via done()
 *	ok(cond, "name %d", i);
 *	is_int(got, want, "name");
 *	is_mem(got, want, len, "name");
 *	todo_start("reason"); ... todo_end();
 *	diag("note %s", s);
 *	return done();			non-zero if any test failed
 *
 * Tests inside a todo block are reported with "# TODO reason" and do not
 * count as failures (that is what TAP means by TODO).
 */
#ifndef DOTPROXYD_TAP_H
#define DOTPROXYD_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int		 tap_planned = -1;
static int		 tap_run;
static int		 tap_failed;
static const char	*tap_todo;

static void	 plan(int) __attribute__((__unused__));
static int	 ok_at(int, const char *, int, const char *, ...)
		    __attribute__((__format__ (printf, 4, 5)));
static void	 diag(const char *, ...)
		    __attribute__((__format__ (printf, 1, 2), __unused__));
static void	 todo_start(const char *) __attribute__((__unused__));
static void	 todo_end(void) __attribute__((__unused__));
static int	 is_int_at(long long, long long, const char *, int,
		    const char *, ...)
		    __attribute__((__format__ (printf, 5, 6), __unused__));
static int	 is_mem_at(const void *, const void *, size_t, const char *,
		    int, const char *, ...)
		    __attribute__((__format__ (printf, 6, 7), __unused__));
static int	 done(void) __attribute__((__unused__));
static void	 tap_vdiag(const char *, va_list)
		    __attribute__((__format__ (printf, 1, 0)));
static int	 tap_vok(int, const char *, int, const char *, va_list)
		    __attribute__((__format__ (printf, 4, 0)));

static void
plan(int n)
{
	tap_planned = n;
	if (n > 0)
		printf("1..%d\n", n);
	fflush(stdout);
}

static void
tap_vdiag(const char *fmt, va_list ap)
{
	char	buf[1024], *p, *nl;

	vsnprintf(buf, sizeof(buf), fmt, ap);
	for (p = buf; p != NULL; p = nl) {
		if ((nl = strchr(p, '\n')) != NULL)
			*nl++ = '\0';
		if (nl != NULL && *nl == '\0')
			nl = NULL;
		printf("# %s\n", p);
	}
	fflush(stdout);
}

static void
diag(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	tap_vdiag(fmt, ap);
	va_end(ap);
}

static void
todo_start(const char *why)
{
	tap_todo = why;
}

static void
todo_end(void)
{
	tap_todo = NULL;
}

static int
tap_vok(int cond, const char *file, int line, const char *fmt, va_list ap)
{
	char	name[512];

	tap_run++;
	vsnprintf(name, sizeof(name), fmt, ap);
	printf("%sok %d - %s", cond ? "" : "not ", tap_run, name);
	if (tap_todo != NULL)
		printf(" # TODO %s", tap_todo);
	printf("\n");
	if (!cond) {
		if (tap_todo == NULL)
			tap_failed++;
		printf("#   Failed %stest at %s line %d.\n",
		    tap_todo ? "(TODO) " : "", file, line);
	}
	fflush(stdout);
	return cond;
}

static int
ok_at(int cond, const char *file, int line, const char *fmt, ...)
{
	va_list	ap;
	int	r;

	va_start(ap, fmt);
	r = tap_vok(cond, file, line, fmt, ap);
	va_end(ap);
	return r;
}

static int
is_int_at(long long got, long long want, const char *file, int line,
    const char *fmt, ...)
{
	va_list	ap;
	int	r;

	va_start(ap, fmt);
	r = tap_vok(got == want, file, line, fmt, ap);
	va_end(ap);
	if (!r)
		printf("#          got: %lld\n#     expected: %lld\n", got, want);
	return r;
}

static void
tap_hexdump(const char *what, const unsigned char *p, size_t len)
{
	size_t	i;

	printf("# %8s:", what);
	for (i = 0; i < len && i < 64; i++)
		printf(" %02x", p[i]);
	printf("%s\n", len > 64 ? " ..." : "");
}

static int
is_mem_at(const void *got, const void *want, size_t len, const char *file,
    int line, const char *fmt, ...)
{
	const unsigned char	*g = got, *w = want;
	va_list			 ap;
	size_t			 i;
	int			 r;

	va_start(ap, fmt);
	r = tap_vok(got != NULL && want != NULL && memcmp(got, want, len) == 0,
	    file, line, fmt, ap);
	va_end(ap);
	if (!r && got != NULL && want != NULL) {
		for (i = 0; i < len && g[i] == w[i]; i++)
			;
		printf("#   first difference at byte %zu of %zu\n", i, len);
		tap_hexdump("got", g + i, len - i);
		tap_hexdump("expected", w + i, len - i);
	}
	return r;
}

/* Print the plan if it was not given up front; the exit status. */
static int
done(void)
{
	if (tap_planned <= 0)
		printf("1..%d\n", tap_run);
	else if (tap_planned != tap_run) {
		printf("# planned %d tests but ran %d\n", tap_planned, tap_run);
		tap_failed++;
	}
	if (tap_failed)
		printf("# failed %d of %d tests\n", tap_failed, tap_run);
	fflush(stdout);
	return tap_failed ? 1 : 0;
}

#define ok(cond, ...)		ok_at(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define is_int(g, w, ...)	is_int_at((long long)(g), (long long)(w), \
				    __FILE__, __LINE__, __VA_ARGS__)
#define is_mem(g, w, n, ...)	is_mem_at((g), (w), (n), __FILE__, __LINE__, \
				    __VA_ARGS__)

#endif /* DOTPROXYD_TAP_H */
