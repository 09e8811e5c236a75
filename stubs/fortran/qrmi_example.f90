! qrmi_example: one task through the qrmid_qrmi module, its result printed.
!
!   qrmi_example [RESOURCE [sampler|estimator INPUT.json | pulser SEQUENCE.json [JOB_RUNS]]]
!
! RESOURCE defaults to the job's first resource (QRMI_JOB_QPU_RESOURCES); without a task kind and input, a
! Bell-state sampler of 1000 shots runs. INPUT.json is a Qiskit primitive's input (the `parameters` of QRMI's task_runner input),
! SEQUENCE.json a Pulser sequence's abstract representation, run JOB_RUNS times (default 100).
! The task runs under the job's lease ($RESOURCE_QRMI_JOB_ACQUISITION_TOKEN, else $QRMI_JOB_ACQUISITION_TOKEN); outside
! a job that has one, the program takes a lease for the task and releases it at the end.
! Prints `task ID`, then `state STATE` and the result (the backend's JSON) on stdout, or the task's logs on stderr.
! Exit status: 0 when the task completed, 1 when it failed or was cancelled, 2 when a call failed (the library's
! return code and message on stderr).
program qrmi_example
  use, intrinsic :: iso_fortran_env, only: error_unit, output_unit
  use qrmid_qrmi
  implicit none

  character(len=*), parameter :: BELL = '{"pubs": [["OPENQASM 3.0;\ninclude \"stdgates.inc\";\nbit[2] meas;\n' // &
    'qubit[2] q;\nh q[0];\ncx q[0], q[1];\nmeas[0] = measure q[0];\nmeas[1] = measure q[1];\n", null, 1000]], ' // &
    '"version": 2}'

  if (.not. run_task()) stop 1

contains

  !> Runs the task; .true. when it completed. Its variables are freed on return, finalizing the resource.
  logical function run_task()
    type(qrmi_resource) :: qpu
    character(len=:), allocatable :: name, kind, input, task, text, msg, lease
    integer :: ierr, state, job_runs, length

    name = argument(1)
    if (len(name) == 0) name = qrmi_job_resource(1)
    kind = argument(2)
    if (len(kind) == 0) kind = 'sampler'
    input = BELL
    if (command_argument_count() >= 3) input = read_file(argument(3))
    job_runs = 100
    if (command_argument_count() >= 4) then
      text = argument(4)
      read (text, *) job_runs
    end if

    call qpu%open(name, ierr, msg)
    call check(qpu, ierr, msg, 'opening ' // name)
    lease = ''
    call get_environment_variable(name // '_QRMI_JOB_ACQUISITION_TOKEN', length=length)
    if (length == 0) call get_environment_variable('QRMI_JOB_ACQUISITION_TOKEN', length=length)
    if (length == 0) then
      call qpu%acquire(lease, ierr, msg)
      call check(qpu, ierr, msg, 'leasing ' // name)
    end if
    select case (kind)
    case ('sampler', 'estimator')
      call qpu%start_primitive(kind, input, task, ierr, msg)
    case ('pulser')
      call qpu%start_pulser(input, job_runs, task, ierr, msg)
    case default
      ierr = QRMI_RETURN_CODE_INVALID_INPUT_ERROR
      msg = 'unknown task kind ' // kind // ': sampler, estimator or pulser'
    end select
    call check(qpu, ierr, msg, 'starting a ' // kind // ' task on ' // name, lease)
    write (output_unit, '(a)') 'task ' // task
    flush (output_unit)

    call qpu%wait(task, state, ierr, msg)
    call check(qpu, ierr, msg, 'waiting for task ' // task, lease)
    write (output_unit, '(a)') 'state ' // qrmi_task_status_name(state)
    if (state == QRMI_TASK_STATUS_COMPLETED) then
      call qpu%result(task, text, ierr, msg)
      call check(qpu, ierr, msg, 'reading the result of task ' // task, lease)
      write (output_unit, '(a)') text
    else
      call qpu%logs(task, text, ierr, msg)
      if (ierr == QRMI_RETURN_CODE_SUCCESS) write (error_unit, '(a)') text
    end if
    call qpu%stop(task, ierr, msg)
    call check(qpu, ierr, msg, 'stopping task ' // task, lease)
    if (len(lease) > 0) then
      call qpu%release(lease, ierr, msg)
      call check(qpu, ierr, msg, 'releasing the lease on ' // name)
    end if
    run_task = state == QRMI_TASK_STATUS_COMPLETED
  end function run_task

  !> Ends the program with status 2 and the library's message when the last call failed, releasing `lease` if any.
  subroutine check(qpu, ierr, msg, what, lease)
    type(qrmi_resource), intent(inout) :: qpu
    integer, intent(in) :: ierr
    character(len=*), intent(in) :: msg, what
    character(len=*), intent(in), optional :: lease
    integer :: ignored
    if (ierr == QRMI_RETURN_CODE_SUCCESS) return
    write (error_unit, '(a, i0, a)') 'qrmi_example: ' // what // ' failed (QRMI return code ', ierr, '): ' // msg
    if (present(lease)) then
      if (len(lease) > 0) call qpu%release(lease, ignored)
    end if
    call qpu%close()
    stop 2
  end subroutine check

  function argument(n) result(value)
    integer, intent(in) :: n
    character(len=:), allocatable :: value
    integer :: length
    if (n > command_argument_count()) then
      value = ''
      return
    end if
    call get_command_argument(n, length=length)
    allocate (character(len=length) :: value)
    call get_command_argument(n, value)
  end function argument

  function read_file(path) result(text)
    character(len=*), intent(in) :: path
    character(len=:), allocatable :: text
    integer :: unit, size, stat
    open (newunit=unit, file=path, access='stream', form='unformatted', status='old', action='read', iostat=stat)
    if (stat /= 0) then
      write (error_unit, '(a)') 'qrmi_example: cannot read ' // path
      stop 2
    end if
    inquire (unit=unit, size=size)
    allocate (character(len=size) :: text)
    read (unit) text
    close (unit)
  end function read_file

end program qrmi_example
