// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The cheapest probes there can be on the functions sslsniff traces: what any uprobe
 * tracer pays for the int3 trap and the return trampoline, before doing any work. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("uprobe.multi")
int floor_enter(void *ctx)
{
	return 0;
}

SEC("uretprobe.multi")
int floor_exit(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
