! Every procedure of the qrmid_qrmi module against a live daemon, one line printed per outcome for the test to check:
! the job's lists, a call before open, accessibility, a lease of the handle's own, a task on slow-qpu that is not ready
! when the wait gives up, its stop, status and logs, and calls after close.
program qrmi_fortran_probe
  use qrmid_qrmi
  implicit none

  call probe()

contains

  subroutine probe()
    type(qrmi_resource) :: qpu, ghost
    character(len=:), allocatable :: msg, task, text, token
    integer :: ierr, state
    logical :: accessible

    print '(a, i0)', 'count ', qrmi_job_resource_count()
    print '(a)', 'second ' // qrmi_job_resource(2)
    print '(a)', 'third [' // qrmi_job_resource(3) // ']'
    print '(a, i0)', 'type ', qrmi_resource_type_of('local-pulser')
    print '(a, i0)', 'untyped ', qrmi_resource_type_of('elsewhere')

    call qpu%start_pulser('{}', 1, task, ierr, msg)
    print '(a, i0, a)', 'unopened ', ierr, ' ' // msg

    call ghost%open('ghost', ierr, msg, resource_type=QRMI_RESOURCE_TYPE_LOCAL_QISKIT)
    call ghost%is_accessible(accessible, ierr, msg)
    print '(a, l1, 1x, i0)', 'ghost accessible ', accessible, ierr

    call qpu%open('slow-qpu', ierr, msg, resource_type=QRMI_RESOURCE_TYPE_PASQAL_LOCAL)
    call qpu%is_accessible(accessible, ierr, msg)
    print '(a, l1, 1x, i0)', 'accessible ', accessible, ierr
    call qpu%acquire(token, ierr, msg)
    print '(a, i0, 1x, i0)', 'acquired ', ierr, len(token)
    call qpu%start_pulser('{"version": "1"}', 3, task, ierr, msg)
    print '(a, i0)', 'started ', ierr
    print '(a)', 'task ' // task
    call qpu%wait(task, state, ierr, msg, poll_seconds=0.1, timeout_seconds=0.3)
    print '(a, i0, 1x, a, 1x, a)', 'waited ', ierr, qrmi_task_status_name(state), msg
    call qpu%result(task, text, ierr, msg)
    print '(a, i0, 1x, a)', 'early result ', ierr, msg
    call qpu%stop(task, ierr, msg)
    print '(a, i0)', 'stopped ', ierr
    call qpu%task_status(task, state, ierr, msg)
    print '(a, i0, 1x, a)', 'status ', ierr, qrmi_task_status_name(state)
    call qpu%logs(task, text, ierr, msg)
    print '(a, i0)', 'logs ', ierr
    call qpu%task_status('no-such-task', state, ierr, msg)
    print '(a, i0, 1x, a)', 'unknown task ', ierr, msg
    call qpu%release(token, ierr, msg)
    print '(a, i0)', 'released ', ierr

    call qpu%close()
    print '(a, l1)', 'open after close ', qpu%is_open()
    call qpu%task_status(task, state, ierr, msg)
    print '(a, i0, 1x, a)', 'closed ', ierr, msg
  end subroutine probe

end program qrmi_fortran_probe
