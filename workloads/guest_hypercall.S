/* Guest program: one KVM_HC_MAP_GPA_RANGE hypercall (convert workload).
 *
 * 32-bit flat protected mode, CPL 0 (KVM refuses hypercalls from CPL > 0).
 * In:  EBX = GPA, ECX = number of pages, EDX = attributes
 *      (KVM_MAP_GPA_RANGE_ENCRYPTED = private).
 * Out: OUT 0xe2 with EAX = the hypercall's return value, then HLT.
 * Two copies: VMCALL for Intel, VMMCALL for AMD; the host picks by CPUID.
 */
#define KVM_HC_MAP_GPA_RANGE 12
#define PORT_RESULT 0xe2

	.section .rodata.gms_guest_hypercall, "a"
	.code32
	.globl gms_guest_vmcall_start
	.globl gms_guest_vmcall_end
gms_guest_vmcall_start:
	mov $KVM_HC_MAP_GPA_RANGE, %eax
	vmcall
	mov $PORT_RESULT, %dx
	out %eax, %dx
1:	hlt
	jmp 1b
gms_guest_vmcall_end:

	.globl gms_guest_vmmcall_start
	.globl gms_guest_vmmcall_end
gms_guest_vmmcall_start:
	mov $KVM_HC_MAP_GPA_RANGE, %eax
	vmmcall
	mov $PORT_RESULT, %dx
	out %eax, %dx
1:	hlt
	jmp 1b
gms_guest_vmmcall_end:

	.section .note.GNU-stack, "", @progbits
