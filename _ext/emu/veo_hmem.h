/*
 * veo_hmem.h -- heterogeneous memory addresses of the VEO API.
 *
 * An hmem address is a 64-bit value: bit 63 says "VE address", bits 62:59
 * hold the proc identifier, bits 58:0 the VE virtual address.
 */
#ifndef _VEO_HMEM_H_
#define _VEO_HMEM_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VEO_MAX_HMEM_PROCS 16

int veo_is_ve_addr(const void *addr);
void *veo_get_hmem_addr(void *addr);
int veo_get_max_proc_identifier(void);
int veo_get_proc_identifier_from_hmem(const void *addr);

#ifdef __cplusplus
}
#endif
#endif /* _VEO_HMEM_H_ */
